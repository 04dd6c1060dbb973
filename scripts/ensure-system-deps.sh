#!/usr/bin/env bash
# Install the Debian packages the tests need, if any is missing.
# Idempotent; fast when everything is present (no apt-get at all then).
# Not root: says what is missing and exits 0 (the tests that need it skip locally, fail in CI).
set -euo pipefail

# package -> a file it provides, checked first because it is cheaper than dpkg-query
declare -A PROVIDES=(
    [dnsmasq-base]=/usr/sbin/dnsmasq
    [dnsmasq-utils]=/usr/bin/dhcp_release
    [udhcpc]=/usr/sbin/udhcpc
    [iproute2]=/usr/sbin/ip
    [sqlite3]=/usr/bin/sqlite3
    [galera-4]=/usr/lib/galera/libgalera_smm.so
    [rsync]=/usr/bin/rsync
    [chromium]=/usr/bin/chromium
    [chromium-driver]=/usr/bin/chromedriver
    [kea-dhcp4-server]=/usr/sbin/kea-dhcp4
    [kea-ctrl-agent]=/usr/sbin/kea-ctrl-agent
    [kea-admin]=/usr/sbin/kea-admin
    [bind9-dnsutils]=/usr/bin/dig
)

installed() {
    [ -e "${PROVIDES[$1]}" ] ||
        dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for pkg in dnsmasq-base dnsmasq-utils udhcpc iproute2 sqlite3 galera-4 rsync bind9-dnsutils \
    chromium chromium-driver kea-dhcp4-server kea-ctrl-agent kea-admin; do
    installed "$pkg" || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing Debian packages: ${missing[*]}" >&2
    echo "system-deps: not root, skipping; install them with:" \
        "sudo apt-get install ${missing[*]}" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "system-deps: missing ${missing[*]} and no apt-get here; install them by hand" >&2
    exit 1
fi

echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Kea's packages start a system kea-dhcp4 and control agent on install; the tests run
# their own. A policy-rc.d (when none is there) keeps services from starting meanwhile.
made_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -q </dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
[ -z "$made_policy" ] || { rm -f /usr/sbin/policy-rc.d; trap - EXIT; }
# Never started at boot either (systemd), nor left running if something started them.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now kea-dhcp4-server kea-ctrl-agent >/dev/null 2>&1 || true
fi
