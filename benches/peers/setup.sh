#!/usr/bin/env bash
# Installs the peers that benches/peers.sh compares rhai-supervisor with, into a cache
# directory (default target/peers/), from the package registries:
#   supervisord 4.x and circus 0.19   PyPI, into a Python venv (target/peers/venv)
#   s6 and runit                      Debian packages (apt-get; needs root)
#   pm2                               npm, into target/peers/npm
# and builds the child program every peer runs (target/peers/bin/pause, from pause.c).
# A peer whose install fails is skipped: the line "skip PEER: REASON" goes to
# target/peers/skipped, which peers.sh prints and the report quotes.
# Re-running is cheap: what is already installed is kept.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${PEERS_CACHE:-$root/target/peers}"
mkdir -p "$cache/bin"
: >"$cache/skipped"
log="$cache/setup.log"
: >"$log"

skip() { echo "skip $1: $2" | tee -a "$cache/skipped"; }

# The child every supervisor runs: pause(2) forever, optionally telling a readiness fd.
if ! gcc -O2 -o "$cache/bin/pause" "$here/pause.c" >>"$log" 2>&1; then
    echo "setup: cannot build pause.c with gcc (see $log)" >&2
    exit 1
fi

# supervisord and circus from PyPI, one venv.
py="${PYTHON:-python3}"
if [ ! -x "$cache/venv/bin/python" ]; then
    "$py" -m venv "$cache/venv" >>"$log" 2>&1 || rm -rf "$cache/venv"
fi
if [ -x "$cache/venv/bin/python" ]; then
    "$cache/venv/bin/pip" install -q 'supervisor>=4,<5' >>"$log" 2>&1 ||
        skip supervisord "pip install supervisor failed (see $log)"
    "$cache/venv/bin/pip" install -q 'circus==0.19.*' >>"$log" 2>&1 ||
        skip circus "pip install circus failed (see $log)"
else
    skip supervisord "cannot create a Python venv with $py"
    skip circus "cannot create a Python venv with $py"
fi

# s6 and runit from Debian.
need_apt=()
command -v s6-svscan >/dev/null 2>&1 || need_apt+=(s6)
command -v runsvdir >/dev/null 2>&1 || need_apt+=(runit)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update >>"$log" 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "${need_apt[@]}" >>"$log" 2>&1
    fi
fi
command -v s6-svscan >/dev/null 2>&1 || skip s6 "apt-get install s6 failed or not root (see $log)"
command -v runsvdir >/dev/null 2>&1 || skip runit "apt-get install runit failed or not root (see $log)"

# pm2 from npm.
if command -v npm >/dev/null 2>&1; then
    if [ ! -x "$cache/npm/node_modules/.bin/pm2-runtime" ]; then
        npm install --silent --no-audit --no-fund --prefix "$cache/npm" pm2 >>"$log" 2>&1 ||
            skip pm2 "npm install pm2 failed (see $log)"
    fi
    [ -x "$cache/npm/node_modules/.bin/pm2-runtime" ] || grep -q '^skip pm2' "$cache/skipped" ||
        skip pm2 "npm install pm2 left no pm2-runtime (see $log)"
else
    skip pm2 "npm not found"
fi

# Versions, for the report.
{
    echo "supervisord $("$cache/venv/bin/supervisord" --version 2>/dev/null || echo -)"
    echo "circus $("$cache/venv/bin/circusd" --version 2>/dev/null | head -1 || echo -)"
    echo "s6 $(dpkg-query -W -f '${Version}' s6 2>/dev/null || echo -)"
    echo "runit $(dpkg-query -W -f '${Version}' runit 2>/dev/null || echo -)"
    echo "pm2 $(node -e "console.log(require('$cache/npm/node_modules/pm2/package.json').version)" 2>/dev/null || echo -)"
    echo "node $(node --version 2>/dev/null || echo -)"
    echo "python $("$cache/venv/bin/python" --version 2>/dev/null | cut -d' ' -f2 || echo -)"
    echo "bash ${BASH_VERSION}"
} >"$cache/versions"
cat "$cache/versions"
exit 0
