#!/usr/bin/env bash
# Soak run: 10,000 crash/revive cycles and 1,000 create/destroy cycles (after a warm-up
# of a tenth of that), then checks that the supervisor's descriptors, threads, zombie
# children and resident memory are back where they were after the warm-up.
#
#   bash scripts/soak.sh                  # the full run (a few minutes)
#   SOAK_CRASHES=1000 SOAK_CREATES=100 bash scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

crashes=${SOAK_CRASHES:-10000}
creates=${SOAK_CREATES:-1000}
cargo build --release --quiet
binary=$PWD/target/release/rhai-supervisor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp scripts/soak.rhai "$work/"
mkfifo "$work/soak.gate"
cd "$work"

sample() { # pid → "fds threads zombies rss_kib"
    local pid=$1 fds threads zombies rss n
    # the lowest of a few counts: a scan of /proc in progress holds one more for a moment
    fds=$(ls /proc/"$pid"/fd | wc -l)
    for _ in 1 2 3 4 5; do
        sleep 0.05
        n=$(ls /proc/"$pid"/fd | wc -l)
        [ "$n" -lt "$fds" ] && fds=$n
    done
    threads=$(awk '/^Threads:/ {print $2}' /proc/"$pid"/status)
    rss=$(awk '/^VmRSS:/ {print $2}' /proc/"$pid"/status)
    zombies=$(awk -v p="$pid" '{ sub(/.*\) /, ""); if ($1 == "Z" && $2 == p) n++ } END { print n+0 }' /proc/[0-9]*/stat 2>/dev/null || true)
    echo "$fds $threads $zombies $rss"
}

children() { awk -v p="$1" '{ sub(/.*\) /, ""); if ($2 == p && $1 != "Z") n++ } END { print n+0 }' /proc/[0-9]*/stat 2>/dev/null || true; }

wait_for() { # pid phase: wait for the marker, then for the gate to be the only child
    local pid=$1 phase=$2
    until grep -q "soak: idle $phase" out.log; do
        kill -0 "$pid" 2>/dev/null || { echo "supervisor died"; cat err.log; exit 1; }
        sleep 0.2
    done
    until [ "$(children "$pid")" = 1 ]; do sleep 0.05; done
}

start=$(date +%s)
SOAK_WARMUP_CRASHES=$((crashes / 10)) SOAK_WARMUP_CREATES=$((creates / 10)) \
SOAK_CRASHES=$crashes SOAK_CREATES=$creates \
    "$binary" -q run soak.rhai >out.log 2>err.log &
pid=$!
wait_for "$pid" 1
read -r fds1 threads1 zombies1 rss1 < <(sample "$pid")
echo go > soak.gate
wait_for "$pid" 2
read -r fds2 threads2 zombies2 rss2 < <(sample "$pid")
echo go > soak.gate
until grep -q "soak: finished" out.log; do sleep 0.1; done
kill -TERM "$pid"
wait "$pid"
elapsed=$(( $(date +%s) - start ))

printf '%-22s %10s %10s\n' "" "warm-up" "end"
printf '%-22s %10s %10s\n' "descriptors" "$fds1" "$fds2"
printf '%-22s %10s %10s\n' "threads" "$threads1" "$threads2"
printf '%-22s %10s %10s\n' "zombie children" "$zombies1" "$zombies2"
printf '%-22s %10s %10s\n' "resident memory (KiB)" "$rss1" "$rss2"
echo "after a warm-up of $((crashes / 10)) + $((creates / 10)): $crashes crash/revive and $creates create/destroy cycles in ${elapsed}s"
ok=1
[ "$fds2" -le "$fds1" ] || { echo "LEAK: descriptors"; ok=0; }
[ "$threads2" -le "$threads1" ] || { echo "LEAK: threads"; ok=0; }
[ "$zombies2" = 0 ] || { echo "LEAK: zombies"; ok=0; }
[ "$rss2" -le $((rss1 + rss1 / 4 + 1024)) ] || { echo "LEAK: memory"; ok=0; }
[ "$ok" = 1 ] && echo "no leaks"
[ "$ok" = 1 ]
