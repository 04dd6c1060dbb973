#!/usr/bin/env bash
# Make sure the database servers the tests use answer:
#   MariaDB    on 127.0.0.1:3306, user root, no password
#   PostgreSQL on 127.0.0.1:5432, users postgres and root, trust authentication
# Installs (Debian), initialises and starts them as needed, without systemd.
# Idempotent; when both already answer it only runs three quick queries.
# Not root: says what is wrong and exits 0 (those tests skip locally, fail in CI).
set -euo pipefail

# Overridable, e.g. to try this script on a second PostgreSQL cluster.
PG_PORT=${PG_PORT:-5432}
PG_CLUSTER=${PG_CLUSTER:-main}
MY_PORT=3306

say() { echo "services: $*" >&2; }
is_root() { [ "$(id -u)" -eq 0 ]; }

apt_install() {
    say "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null
    apt-get install -y -q "$@" </dev/null
}

# wait_for SECONDS COMMAND...: retry COMMAND every 0.2 s until it succeeds
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------- MariaDB

my_client() {
    if command -v mariadb >/dev/null; then echo mariadb; else echo mysql; fi
}

my_tcp_ok() {
    command -v "$(my_client)" >/dev/null &&
        "$(my_client)" --no-defaults --protocol=TCP -h 127.0.0.1 -P "$MY_PORT" -u root \
            --connect-timeout=3 -Nse 'SELECT 1' </dev/null >/dev/null 2>&1
}

my_socket_ok() {
    "$(my_client)" --no-defaults -u root -Nse 'SELECT 1' </dev/null >/dev/null 2>&1
}

ensure_mariadb() {
    my_tcp_ok && return 0
    if ! is_root; then
        say "MariaDB does not answer on 127.0.0.1:$MY_PORT as root without password;"
        say "not root, leaving it alone (run 'sudo make services')"
        return 0
    fi
    [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
    if ! my_socket_ok; then
        install -d -o mysql -g mysql -m 0755 /run/mysqld
        if [ ! -d /var/lib/mysql/mysql ]; then
            say "initialising /var/lib/mysql"
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
        fi
        say "starting mariadbd"
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd \
            -- --user=mysql
        wait_for 60 my_socket_ok || { say "mariadbd did not come up"; return 1; }
    fi
    if ! my_tcp_ok; then
        say "allowing root without password over TCP from 127.0.0.1"
        "$(my_client)" --no-defaults -u root </dev/null -e "
            CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
            ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '';
            GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
            ALTER USER 'root'@'localhost'
                IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
            FLUSH PRIVILEGES;"
    fi
    wait_for 30 my_tcp_ok || { say "MariaDB still refuses root on 127.0.0.1:$MY_PORT"; return 1; }
}

# ------------------------------------------------------------- PostgreSQL

pg_ok() {
    command -v psql >/dev/null || return 1
    local user
    for user in postgres root; do
        PGCONNECT_TIMEOUT=3 psql -X -w -h 127.0.0.1 -p "$PG_PORT" -U "$user" -d postgres \
            -Atqc 'SELECT 1' </dev/null >/dev/null 2>&1 || return 1
    done
}

pg_as_postgres() {
    PGCONNECT_TIMEOUT=3 psql -X -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 -Atq "$@" </dev/null
}

ensure_postgres() {
    pg_ok && return 0
    if ! is_root; then
        say "PostgreSQL does not answer on 127.0.0.1:$PG_PORT for postgres and root (trust);"
        say "not root, leaving it alone (run 'sudo make services')"
        return 0
    fi
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || apt_install postgresql
    local ver conf hba
    ver=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' |
        awk -F/ '{print $5}' | sort -V | tail -n 1)
    conf=/etc/postgresql/$ver/$PG_CLUSTER
    if [ ! -f "$conf/postgresql.conf" ]; then
        say "creating cluster $ver/$PG_CLUSTER"
        pg_createcluster --port="$PG_PORT" "$ver" "$PG_CLUSTER" >/dev/null
    fi
    hba=$conf/pg_hba.conf
    if ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' \
        "$hba"; then
        say "trusting local TCP connections in $hba"
        sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
    if pg_lsclusters -h "$ver" "$PG_CLUSTER" | awk '{print $4}' | grep -q online; then
        pg_ctlcluster --skip-systemctl-redirect "$ver" "$PG_CLUSTER" reload
    else
        say "starting PostgreSQL $ver/$PG_CLUSTER"
        pg_ctlcluster --skip-systemctl-redirect "$ver" "$PG_CLUSTER" start
    fi
    wait_for 60 pg_isready -q -h 127.0.0.1 -p "$PG_PORT" ||
        { say "PostgreSQL did not come up on 127.0.0.1:$PG_PORT"; return 1; }
    wait_for 10 pg_as_postgres -c 'SELECT 1' ||
        { say "PostgreSQL refuses postgres on 127.0.0.1:$PG_PORT"; return 1; }
    if [ -z "$(pg_as_postgres -c "SELECT 1 FROM pg_roles WHERE rolname = 'root'")" ]; then
        say "creating PostgreSQL role root"
        pg_as_postgres -c 'CREATE ROLE root SUPERUSER LOGIN'
    fi
    if [ -z "$(pg_as_postgres -c "SELECT 1 FROM pg_database WHERE datname = 'root'")" ]; then
        pg_as_postgres -c 'CREATE DATABASE root OWNER root'
    fi
    pg_ok || { say "PostgreSQL still refuses root on 127.0.0.1:$PG_PORT"; return 1; }
}

ensure_mariadb
ensure_postgres
