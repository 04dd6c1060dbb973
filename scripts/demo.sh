#!/usr/bin/env bash
# A short walkthrough of melange on a fresh, throw-away SQLite store.
# Every command is echoed before it runs.  Usage: make demo  (or scripts/demo.sh)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
MELANGE_BIN=${MELANGE_BIN:-$root/.venv/bin/melange}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

export MELANGE_DB="sqlite:///$tmp/demo.db"
export MELANGE_CONFIG="$tmp/melange.conf"   # an empty config: ignore /etc/melange
: >"$MELANGE_CONFIG"
unset MELANGE_SOCKET MELANGE_OUTPUT MELANGE_DEBUG

melange() { "$MELANGE_BIN" "$@"; }

run() {
    printf '\n$ %s\n' "$*"
    "$@"
}

echo "# store: $MELANGE_DB"
run melange block create 10.0.0.0/24 --name web --network net1 \
    --gateway 10.0.0.1 --dns 10.0.0.1
run melange policy create infra
run melange policy add-range infra --offset 2 --length 8
run melange block update web --policy infra
run melange block allocate web --mac 02:00:00:00:00:01 --hostname vm1
run melange block allocate web --mac 02:00:00:00:00:02 --hostname vm2

printf '\n$ %s\n' 'ip=$(melange block allocate web --mac 02:00:00:00:00:03)'
ip=$(melange block allocate web --mac 02:00:00:00:00:03)
printf '$ %s\n' 'echo "$ip"'
echo "$ip"

run melange ip list -o table
run melange mac-range create 02:16:3e:00:00:00/24
run melange interface create vif-1 --network net1
run melange ip release "$ip"
run melange dhcp hosts
run melange -o table block show web
