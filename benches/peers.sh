#!/usr/bin/env bash
# Side-by-side benchmark of rhai-supervisor against other process supervisors:
# supervisord, circus, s6 (plain and with readiness notification), runit, pm2 and a
# bash `wait -n` loop, each running N copies of the same tiny child program. Method and
# latest figures: BENCHMARKS.md. Not part of `cargo test`.
#
#   bash benches/peers.sh                      # N=50,200,1000, 3 runs (about 45 minutes)
#   bash benches/peers.sh --quick              # N=50,200, 1 run, 5 revivals per kind
#   bash benches/peers.sh --n 200 --runs 5 --only rhai,bash,s6
#
# Options (passed on to the measuring program, benches/peers/probe):
#   --n LIST             numbers of children (default 50,200,1000)
#   --runs K             runs; figures are medians over runs (default 3)
#   --only LIST          peers: rhai,bash,supervisord,circus,s6,s6-ready,runit,pm2
#   --idle-secs S        idle period for the CPU figure (default 10)
#   --revivals K         kills per run with the restart delay at its minimum (default 20)
#   --revivals-default K kills per run at the peers' defaults (default 20)
#   --no-script-nodes    skip rhai-supervisor's script nodes and their floors
#   --out DIR            where results go (default target/peers/results)
#   --no-setup           do not run benches/peers/setup.sh
#
# Needs root (the kernel's process events and apt-get), gcc, Python 3 with venv, npm.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
cache="$root/target/peers"
out="$cache/results"
setup=1
args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) args+=(--n 50,200 --runs 1 --revivals 5 --revivals-default 5) ;;
    --out) out="$2"; shift ;;
    --no-setup) setup=0 ;;
    *) args+=("$1") ;;
    esac
    shift
done

if [ "$(id -u)" != 0 ]; then
    echo "peers.sh: needs root: the process-event socket (proc connector) and apt-get" >&2
    exit 1
fi
mkdir -p "$cache"
if [ $setup = 1 ]; then
    echo "== setup (benches/peers/setup.sh)"
    bash benches/peers/setup.sh
fi
if [ -s "$cache/skipped" ]; then
    echo "== peers that could not be installed:"
    cat "$cache/skipped"
fi

echo "== build rhai-supervisor (release) and the measuring program"
cargo build --release --quiet
CARGO_TARGET_DIR="$cache/probe-target" cargo build --release --quiet \
    --manifest-path benches/peers/probe/Cargo.toml

mkdir -p "$out"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "command: bash benches/peers.sh $*"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo -)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), nproc $(nproc)"
    echo "kernel: $(uname -r)"
    echo "memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rhai-supervisor: $(target/release/rhai-supervisor --version)"
    cat "$cache/versions" 2>/dev/null
} >"$out/machine.txt"
cat "$out/machine.txt"

echo "== measure"
"$cache/probe-target/release/peerbench" \
    --rhai target/release/rhai-supervisor --pause "$cache/bin/pause" \
    --cache "$cache" --bench benches/peers --out "$out" "${args[@]}"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"
echo "== results: $out/summary.md, chart.svg (raw: results.tsv, revival-samples.tsv, notes.txt)"
