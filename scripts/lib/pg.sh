# shellcheck shell=bash
#
# scripts/lib/pg.sh: a throwaway PostgreSQL server for tests and the demo.
#
# Source it, then call `pg_start`:
#
#     source scripts/lib/pg.sh
#     pg_start            # exports DATABASE_URL
#     ...                 # the server is stopped and deleted when the script exits
#
# If DATABASE_URL is already set, pg_start uses that server and starts nothing. Otherwise it
# initdb's a fresh cluster in a temp dir, starts it on 127.0.0.1 on a free port (trust auth,
# user `postgres`), exports DATABASE_URL=postgres://postgres@127.0.0.1:PORT/postgres, and traps
# EXIT/INT/TERM/HUP to stop it and delete the temp dir. The trap replaces any EXIT/INT/TERM/HUP
# trap the caller set before; a caller that needs its own must call `pg_stop` from it.
#
# Environment:
#   DATABASE_URL      use this server instead of starting one (the user must be allowed to
#                     CREATE DATABASE: the tests and the demo create their own databases)
#   PG_BIN            directory holding initdb, pg_ctl and postgres (default: search, below)
#   PG_FAST=1         trade durability for speed (fsync, synchronous_commit and
#                     full_page_writes off). Only for tests: the data is thrown away anyway.
#   PG_PORT_START     first port to try (default 54400; the next 100 ports are scanned)
#   PG_KEEP_TMPDIR=1  keep the temp dir (data and server log) after stopping, for debugging
#
# Works under `set -euo pipefail` and with bash 3.2 (macOS), so: no mapfile, no empty-array
# expansions, every command that may fail is tested explicitly.

# Sourcing twice must not reset the state of a server that is already running.
if [[ -n ${_PG_SH_LOADED:-} ]]; then
    return 0
fi
_PG_SH_LOADED=1

_PG_BIN_DIR=""      # directory of the server binaries we use
_PG_TMPDIR=""       # temp dir of the server we started; empty when we started none
_PG_RUNAS=""        # user that owns and runs the server when we are root
_PG_URL=""          # the DATABASE_URL we exported, so pg_stop only unsets its own
_PG_LOG_SHOWN=""    # set once the log tail was printed, to not print it twice
PG_SERVER_LOG=""    # the server's log file, for callers that want to show it

_pg_say() { printf 'pg.sh: %s\n' "$*" >&2; }

# Hide the password of a URL (postgres://user:secret@host/db) or a key=value conninfo
# (password=secret), so the server in use can be printed safely.
pg_redact_url() {
    printf '%s\n' "$1" | sed -E \
        -e 's#^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*):[^@/]*@#\1:***@#' \
        -e 's#(password[[:space:]]*=[[:space:]]*)[^[:space:]]+#\1***#g'
}

pg_install_hint() {
    cat >&2 <<'EOF'
pg.sh: PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found.
  Looked at PG_BIN, on PATH, and in /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin,
  /usr/local/pgsql/bin, /opt/homebrew/opt/postgresql*/bin, /usr/local/opt/postgresql*/bin.
  Install them:
    Debian/Ubuntu:  sudo apt-get install postgresql
    Fedora/RHEL:    sudo dnf install postgresql-server
    macOS:          brew install postgresql@16
  or point PG_BIN at the directory that holds them (e.g. PG_BIN=/usr/lib/postgresql/16/bin),
  or set DATABASE_URL to an existing server where the user may CREATE DATABASE, e.g.
    DATABASE_URL=postgres://postgres:secret@localhost:5432/postgres
EOF
}

# A directory is usable when the three binaries a cluster needs are all in it: pg_ctl finds
# `postgres` next to itself, and mixing versions of initdb and postgres does not work.
_pg_is_bin_dir() {
    [[ -x $1/pg_ctl && -x $1/initdb && -x $1/postgres ]]
}

# The directory a command really lives in. Debian-style setups symlink pg_ctl into
# /usr/local/bin; the real directory is the one that also has the matching initdb and postgres.
_pg_real_dir() {
    local path=$1 real
    if real=$(readlink -f "$path" 2>/dev/null) && [[ -n $real ]]; then
        path=$real
    fi
    dirname "$path"
}

# Well-known install locations, highest PostgreSQL version first. Versions are read from
# `pg_ctl --version` ("pg_ctl (PostgreSQL) 16.2 ...") rather than guessed from the path, which
# does not carry one for Homebrew's plain `postgresql` or /usr/local/pgsql.
_pg_search_dirs() {
    local dir version
    for dir in /usr/lib/postgresql/*/bin /usr/pgsql-*/bin /usr/local/pgsql/bin \
        /opt/homebrew/opt/postgresql*/bin /usr/local/opt/postgresql*/bin; do
        # An unmatched glob stays literal and fails this test.
        _pg_is_bin_dir "$dir" || continue
        version=$("$dir/pg_ctl" --version 2>/dev/null | awk '{ print $3; exit }') || version=""
        printf '%s\t%s\n' "${version:-0}" "$dir"
    done | sort -t. -k1,1nr -k2,2nr | cut -f2
}

# Find the server binaries: PG_BIN, else pg_ctl/initdb on PATH, else the highest version in a
# well-known location. Sets _PG_BIN_DIR and prints it; returns 1 (printing nothing) if none.
pg_find_bin() {
    local dir
    if [[ -n ${PG_BIN:-} ]]; then
        if _pg_is_bin_dir "$PG_BIN"; then
            _PG_BIN_DIR=$PG_BIN
            printf '%s\n' "$_PG_BIN_DIR"
            return 0
        fi
        _pg_say "PG_BIN=$PG_BIN does not hold pg_ctl, initdb and postgres"
        return 1
    fi
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dir=$(_pg_real_dir "$(command -v pg_ctl)")
        if _pg_is_bin_dir "$dir"; then
            _PG_BIN_DIR=$dir
            printf '%s\n' "$_PG_BIN_DIR"
            return 0
        fi
    fi
    dir=$(_pg_search_dirs | head -n 1)
    if [[ -n $dir ]]; then
        _PG_BIN_DIR=$dir
        printf '%s\n' "$_PG_BIN_DIR"
        return 0
    fi
    return 1
}

# Path of a client tool (psql, pg_isready): PATH first (Debian puts psql in /usr/bin), else next
# to the server binaries. Prints nothing and returns 1 if not found.
pg_find_tool() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    # shellcheck disable=SC2046 # one directory per line; install paths have no spaces
    for dir in "${PG_BIN:-}" "$_PG_BIN_DIR" $(_pg_search_dirs); do
        if [[ -n $dir && -x $dir/$name ]]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done
    return 1
}

# Run a server command as the cluster owner. PostgreSQL refuses to run as root, so as root
# everything runs as `postgres`; from the temp dir, because the caller's cwd (say /root/src)
# may not be readable by that user.
_pg_as_owner() {
    if [[ -n $_PG_RUNAS ]]; then
        (cd "$_PG_TMPDIR" && runuser -u "$_PG_RUNAS" -- "$@")
    else
        "$@"
    fi
}

# First port in [from, to] with nothing listening on 127.0.0.1. bash's /dev/tcp connect
# succeeds only if something listens; a refused connect means the port is free.
_pg_free_port() {
    local port=$1 to=$2
    while ((port <= to)); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
        port=$((port + 1))
    done
    return 1
}

_pg_log_tail() {
    local lines=${1:-40}
    if [[ -n $PG_SERVER_LOG && -s $PG_SERVER_LOG ]]; then
        _pg_say "last $lines lines of the server log ($PG_SERVER_LOG):"
        tail -n "$lines" "$PG_SERVER_LOG" | sed 's/^/    /' >&2 || true
        _PG_LOG_SHOWN=1
    fi
}

# pg_start's own failures: show why, clean up, exit.
_pg_fail() {
    local rc=$1
    shift
    _pg_say "error: $*"
    [[ -n $_PG_LOG_SHOWN ]] || _pg_log_tail 40
    pg_stop
    exit "$rc"
}

# EXIT trap. A script that fails (but was not interrupted) gets the server log tail, since
# the log is deleted with the temp dir. Must not fail itself: that would change the exit code.
_pg_on_exit() {
    local rc=$?
    if ((rc != 0 && rc < 128)) && [[ -z $_PG_LOG_SHOWN && -n $_PG_TMPDIR ]]; then
        _pg_log_tail 30
    fi
    pg_stop || true
    exit "$rc"
}

_pg_on_signal() {
    pg_stop || true
    exit "$1"
}

pg_start() {
    if [[ -n ${DATABASE_URL:-} ]]; then
        _pg_say "using the server from DATABASE_URL: $(pg_redact_url "$DATABASE_URL")"
        return 0
    fi

    local bin
    if ! bin=$(pg_find_bin); then
        pg_install_hint
        exit 2
    fi
    _PG_BIN_DIR=$bin    # pg_find_bin ran in a subshell; keep its answer here

    if [[ $(id -u) -eq 0 ]]; then
        if ! id postgres >/dev/null 2>&1; then
            _pg_say "error: running as root, but there is no 'postgres' user."
            _pg_say "  PostgreSQL refuses to run as root. Create the user (useradd --system"
            _pg_say "  --create-home postgres; installing the distribution's postgresql package"
            _pg_say "  does it), run as a normal user, or set DATABASE_URL to an existing server."
            exit 2
        fi
        if ! command -v runuser >/dev/null 2>&1; then
            _pg_say "error: running as root, but runuser (util-linux) is missing; it is needed to"
            _pg_say "  run PostgreSQL as the 'postgres' user. Run as a normal user or set DATABASE_URL."
            exit 2
        fi
        _PG_RUNAS=postgres
    fi

    local tmp=${TMPDIR:-/tmp}
    _PG_TMPDIR=$(mktemp -d "${tmp%/}/reproject-pg.XXXXXX")
    PG_SERVER_LOG=$_PG_TMPDIR/postgres.log
    # Registered before anything can fail, so a half-started server is still cleaned up.
    trap _pg_on_exit EXIT
    trap '_pg_on_signal 130' INT
    trap '_pg_on_signal 143' TERM
    trap '_pg_on_signal 129' HUP

    if [[ -n $_PG_RUNAS ]]; then
        chown "$_PG_RUNAS:" "$_PG_TMPDIR"
        # The temp dir is useless if a parent directory is closed to the postgres user
        # (TMPDIR=/root/tmp, say).
        if ! _pg_as_owner test -w "$_PG_TMPDIR" 2>/dev/null; then
            _pg_fail 1 "user $_PG_RUNAS cannot write to $_PG_TMPDIR; set TMPDIR to a directory it can reach (e.g. TMPDIR=/tmp)"
        fi
    fi

    local fast=${PG_FAST:-0} sync_flag=""
    if [[ $fast == 1 ]]; then
        sync_flag=--no-sync     # initdb's own fsyncs are the slowest part of startup
    fi

    if ! _pg_as_owner "$_PG_BIN_DIR/initdb" -D "$_PG_TMPDIR/data" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C ${sync_flag:+"$sync_flag"} >"$_PG_TMPDIR/initdb.log" 2>&1; then
        sed 's/^/    /' "$_PG_TMPDIR/initdb.log" >&2 || true
        _pg_fail 1 "initdb failed (output above)"
    fi

    # Listen on loopback only, socket in our temp dir (so nothing clashes with a system server
    # or needs /var/run/postgresql). pg_ctl runs -o through /bin/sh, hence the quotes.
    local opts_common="-c listen_addresses=127.0.0.1 -k '$_PG_TMPDIR' -c max_connections=200"
    if [[ $fast == 1 ]]; then
        opts_common="$opts_common -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi

    local first=${PG_PORT_START:-54400} port attempt=0
    port=$first
    while :; do
        if ! port=$(_pg_free_port "$port" $((first + 100))); then
            _pg_fail 1 "no free port in $first..$((first + 100)) on 127.0.0.1"
        fi
        # pg_ctl -l appends; start each attempt with an empty log so the bind-error check
        # below only sees this attempt. (Truncate, never create: as root the file must stay
        # owned by postgres, which creates it.)
        if [[ -e $PG_SERVER_LOG ]]; then
            : >"$PG_SERVER_LOG"
        fi
        if _pg_as_owner "$_PG_BIN_DIR/pg_ctl" -D "$_PG_TMPDIR/data" -l "$PG_SERVER_LOG" \
            -w -t 30 -o "-p $port $opts_common" start >"$_PG_TMPDIR/pg_ctl.log" 2>&1; then
            break
        fi
        # Another process may grab the port between the scan and the bind: try the next one.
        attempt=$((attempt + 1))
        if ((attempt < 5)) && grep -qE 'could not bind|Address already in use|could not create any TCP/IP sockets' \
            "$PG_SERVER_LOG" 2>/dev/null; then
            _pg_say "port $port was taken meanwhile; trying the next one"
            port=$((port + 1))
            continue
        fi
        sed 's/^/    /' "$_PG_TMPDIR/pg_ctl.log" >&2 || true
        _pg_fail 1 "the server did not start within 30 s on port $port"
    done

    # pg_ctl -w already waited for "ready"; check the TCP listener itself too, since that is
    # what every client will use.
    local isready waited=0
    if isready=$(pg_find_tool pg_isready); then
        until "$isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; do
            waited=$((waited + 1))
            if ((waited > 30)); then
                _pg_fail 1 "the server does not accept connections on 127.0.0.1:$port after 30 s"
            fi
            sleep 1
        done
    fi

    _PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
    export DATABASE_URL=$_PG_URL
    local version note=""
    version=$("$_PG_BIN_DIR/postgres" --version 2>/dev/null | awk '{ print $3; exit }') || version="?"
    if [[ $fast == 1 ]]; then
        note=" (PG_FAST=1: fsync off)"
    fi
    _pg_say "started a throwaway PostgreSQL $version ($_PG_BIN_DIR) in $_PG_TMPDIR$note"
    _pg_say "using DATABASE_URL=$DATABASE_URL"
}

# Stop the server pg_start started and delete its temp dir. Safe to call more than once, and
# a no-op when pg_start used an existing DATABASE_URL.
pg_stop() {
    [[ -n ${_PG_TMPDIR:-} ]] || return 0
    local dir=$_PG_TMPDIR stopped=1 what="removed"
    if [[ -f $dir/data/postmaster.pid ]]; then
        what="stopped the server and removed"
        # fast: roll back open transactions and disconnect clients, then a clean shutdown.
        # immediate is the fallback if that hangs (a client stuck in a long query, say).
        if ! _pg_as_owner "$_PG_BIN_DIR/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 &&
            ! _pg_as_owner "$_PG_BIN_DIR/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1; then
            stopped=0
        fi
    fi
    _PG_TMPDIR=""
    if [[ $_PG_URL == "${DATABASE_URL:-}" ]]; then
        unset DATABASE_URL
    fi
    _PG_URL=""
    if ((stopped == 0)); then
        _pg_say "warning: could not stop the server in $dir; left it there (see $dir/data/postmaster.pid)"
    elif [[ ${PG_KEEP_TMPDIR:-0} == 1 ]]; then
        _pg_say "kept $dir (PG_KEEP_TMPDIR=1); the server is stopped"
    else
        rm -rf "$dir"
        _pg_say "$what $dir"
    fi
    return 0
}
