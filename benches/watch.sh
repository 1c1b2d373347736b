#!/usr/bin/env bash
# What watching costs a supervisor of 1000 nodes: its CPU time (all its threads, from
# /proc/PID/task/*/schedstat, in nanoseconds) over a period while idle, while `top` is
# open in a terminal (tmux, 80x24), and while something scrapes /metrics once a second;
# in the same run, against the same supervisor. Method and latest figures:
# BENCHMARKS.md ("Watching"). Not part of `cargo test`.
#
#   bash benches/watch.sh                 # 1000 nodes, 30 s per period, 3 runs
#   bash benches/watch.sh --nodes 200 --secs 10 --runs 1
#
# Needs tmux and curl. The results go to target/watch/results.tsv (one line per run
# and period) and target/watch/summary.md (medians).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
nodes=1000
secs=30
runs=3
while [ $# -gt 0 ]; do
    case "$1" in
    --nodes) nodes="$2"; shift ;;
    --secs) secs="$2"; shift ;;
    --runs) runs="$2"; shift ;;
    *) echo "watch.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
for tool in tmux curl; do
    command -v "$tool" >/dev/null || { echo "watch.sh: needs $tool" >&2; exit 1; }
done

echo "== build rhai-supervisor (release)"
cargo build --release --quiet
bin="$root/target/release/rhai-supervisor"
out="$root/target/watch"
work="$out/work"
rm -rf "$work"
mkdir -p "$work"
results="$out/results.tsv"
printf 'run\tperiod\tcpu_seconds\tpercent_of_a_core\n' > "$results"

cat > "$work/nodes.rhai" <<EOF
fn zeek_init() {
    for i in 0..$nodes {
        Supervisor::create(#{name: \`n\${i}\`, command: ["sleep", "100000"]});
    }
    print("created");
}
EOF

# Time on a CPU of a process's live threads, in nanoseconds (threads that ended are
# not counted: the supervisor's threads live as long as it does).
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ n += $1 } END { printf "%.0f", n }'; }

# Waits (up to 60 s) until a command succeeds.
wait_for() {
    local deadline=$((SECONDS + 60))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || { echo "watch.sh: timed out waiting for: $*" >&2; return 1; }
        sleep 0.2
    done
}

# CPU of the supervisor over one period: seconds, and percent of one core.
measure() {
    local pid=$1 before after
    before=$(cpu_ns "$pid")
    sleep "$secs"
    after=$(cpu_ns "$pid")
    awk -v a="$after" -v b="$before" -v s="$secs" \
        'BEGIN { d = (a - b) / 1e9; printf "%.4f\t%.3f", d, d / s * 100 }'
}

all_running() {
    [ "$("$bin" ctl --socket "$work/sup.sock" eval \
        'Supervisor::status().nodes.values().filter(|n| n.state == "running").len()' 2>/dev/null)" = "$nodes" ]
}

for run in $(seq 1 "$runs"); do
    echo "== run $run of $runs: $nodes nodes, $secs s per period"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    (cd "$work" && exec "$bin" -q --call-time-limit 60 run --socket "$work/sup.sock" \
        --metrics "127.0.0.1:$port" nodes.rhai >"$work/sup.out" 2>"$work/sup.err") &
    sup=$!
    wait_for all_running
    sleep 5 # let the start settle

    idle=$(measure "$sup")
    printf '%s\tidle\t%s\n' "$run" "$idle" >> "$results"
    echo "   idle:    $idle"

    tmux -S "$work/tmux.sock" -f /dev/null new-session -d -x 80 -y 24 \
        "TERM=xterm-256color '$bin' top --socket '$work/sup.sock'"
    wait_for sh -c "tmux -S '$work/tmux.sock' capture-pane -p | grep -q ' running '"
    top=$(measure "$sup")
    printf '%s\ttop\t%s\n' "$run" "$top" >> "$results"
    echo "   top:     $top"
    tmux -S "$work/tmux.sock" send-keys q
    sleep 1
    tmux -S "$work/tmux.sock" kill-server 2>/dev/null || true

    # A scraper once a second, as a Prometheus with scrape_interval: 1s.
    (
        end=$((SECONDS + secs + 2))
        while [ $SECONDS -lt $end ]; do
            curl -s -o "$work/metrics.txt" "http://127.0.0.1:$port/metrics" || true
            sleep 1
        done
    ) &
    scraper=$!
    sleep 0.5
    metrics=$(measure "$sup")
    printf '%s\tmetrics\t%s\n' "$run" "$metrics" >> "$results"
    echo "   metrics: $metrics ($(wc -c < "$work/metrics.txt") bytes a scrape)"
    wait "$scraper" 2>/dev/null || true

    "$bin" ctl --socket "$work/sup.sock" stop >/dev/null
    wait "$sup" || true
done

{
    echo "| period | CPU of the supervisor, % of one core (median of $runs) | CPU seconds in $secs s |"
    echo "|---|---:|---:|"
    for period in idle top metrics; do
        awk -F'\t' -v p="$period" '$2 == p { print $4 "\t" $3 }' "$results" | sort -n |
            awk -F'\t' -v p="$period" '{ pct[NR] = $1; sec[NR] = $2 }
                END { m = int((NR + 1) / 2); printf "| %s | %.2f | %.2f |\n", p, pct[m], sec[m] }'
    done
    echo
    echo "$nodes nodes, $runs runs, $(nproc) cores, $(uname -r), commit $(git rev-parse --short HEAD)"
} | tee "$out/summary.md"
