#!/usr/bin/env bash
# Reload of a large cluster where one node changed: how long `ctl reload` takes until
# the plan is applied (the changed node's old process gone and its new one started),
# and the CPU the supervisor spends on it. Figures: BENCHMARKS.md, "Reload". Not part
# of `cargo test`.
#
#   bash benches/reload.sh                  # 1000 nodes, 11 reloads of each kind
#   bash benches/reload.sh --nodes 200 --runs 5 --no-build
#
# Each reload edits one line of the script (the environment of one node), so each plan
# is `~` for that node and `=` for every other. Also measured, for comparison: a dry
# run of the same edit (the scripts evaluated and the plan made, nothing applied), and
# a reload with nothing changed. Every figure is the median over the runs.
#
# Times: "ctl" is the wall time of the `ctl reload` process (its own start, the request,
# the answer of N plan lines), beside that of `ctl eval 1`, the floor of any ctl
# request; "applied" and "evaluated" are what the supervisor logs
# (from the request to the plan applied; the new scripts' top level and zeek_init()),
# and "planned" the comparison of every node's configuration that follows.
# CPU is the supervisor's, both its threads, from /proc/PID/task/*/schedstat (ns).
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=1000
runs=11
build=1
while [ $# -gt 0 ]; do
    case "$1" in
    --nodes) nodes="$2"; shift ;;
    --runs) runs="$2"; shift ;;
    --no-build) build=0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$build" = 1 ]; then
    cargo build --release --quiet
fi
bin="$PWD/target/release/rhai-supervisor"
dir="$(mktemp -d)"
sup=""
cleanup() {
    if [ -n "$sup" ] && kill -0 "$sup" 2>/dev/null; then
        kill -TERM "$sup"
        wait "$sup" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

# The cluster: N command nodes; the first line is the one a reload changes.
script() {
    cat >"$dir/cluster.rhai" <<EOF
let level = "$1";
fn zeek_init() {
    for i in 0..$nodes {
        let env = #{LEVEL: "1"};
        if i == $((nodes / 2)) { env.LEVEL = level; }
        Supervisor::create(#{name: \`w\${i}\`, command: ["sleep", "3600"], env: env});
    }
}
EOF
}

ctl() { "$bin" ctl --socket "$dir/s.sock" --timeout 60 "$@"; }

cpu_ns() {
    local total=0 t
    for t in /proc/"$sup"/task/*/schedstat; do
        read -r ns _ <"$t" && total=$((total + ns))
    done
    echo "$total"
}

now_ns() { date +%s%N; }

median() { sort -n | awk '{a[NR] = $1} END {m = int((NR + 1) / 2); print a[m]}'; }

script a
cd "$dir"
"$bin" run --socket s.sock cluster.rhai >/dev/null 2>"$dir/log" &
sup=$!
cd - >/dev/null
started=0
for _ in $(seq 600); do
    if [ -S "$dir/s.sock" ]; then
        started=$(ctl --json status | grep -o '"state":"running"' | wc -l)
        [ "$started" -ge "$nodes" ] && break
    fi
    sleep 0.1
done
if [ "$started" -lt "$nodes" ]; then
    echo "only $started of $nodes nodes started" >&2
    tail -5 "$dir/log" >&2
    exit 1
fi

# One reload of kind $1 (change, dry, same); prints: ctl_ms applied_ms evaluated_ms cpu_ms
level=a
measure() {
    local kind="$1" args=() before after t0 t1 out applied evaluated planned
    case "$kind" in
    change | dry)
        if [ "$level" = a ]; then level=b; else level=a; fi
        script "$level"
        ;;
    esac
    [ "$kind" = dry ] && args=(--dry-run)
    if [ "$kind" = eval ]; then
        before=$(cpu_ns)
        t0=$(now_ns)
        ctl eval 1 >/dev/null
        t1=$(now_ns)
        after=$(cpu_ns)
        echo "$(((t1 - t0) / 1000)) - - $(((after - before) / 1000)) -"
        return
    fi
    before=$(cpu_ns)
    t0=$(now_ns)
    out=$(ctl reload "${args[@]}")
    t1=$(now_ns)
    after=$(cpu_ns)
    local changed kept
    changed=$(grep -c '^~' <<<"$out" || true)
    kept=$(grep -c '^=' <<<"$out" || true)
    case "$kind" in
    change | dry) [ "$changed" = 1 ] && [ "$kept" = $((nodes - 1)) ] ;;
    same) [ "$changed" = 0 ] && [ "$kept" = "$nodes" ] ;;
    esac || { echo "unexpected plan ($kind): $changed changed, $kept kept" >&2; exit 1; }
    evaluated=$(grep -o 'scripts evaluated in [0-9.]* ms' "$dir/log" | tail -1 | grep -o '[0-9.]*')
    planned=$(grep -o 'planned in [0-9.]* ms' "$dir/log" | tail -1 | grep -o '[0-9.]*')
    if [ "$kind" = dry ]; then
        applied=-
        # A dry run changes nothing: undo the edit for the next pair.
        if [ "$level" = a ]; then level=b; else level=a; fi
        script "$level"
    else
        applied=$(grep -o 'reload applied in [0-9.]* ms' "$dir/log" | tail -1 | grep -o '[0-9.]*')
    fi
    echo "$(((t1 - t0) / 1000)) $applied $evaluated $(((after - before) / 1000)) $planned"
}

for kind in change dry same eval; do
    : >"$dir/$kind.tsv"
    for _ in $(seq "$runs"); do
        measure "$kind" >>"$dir/$kind.tsv"
    done
done

us_to_ms() { awk '{printf "%.1f", $1 / 1000}'; }
row() {
    local kind="$1" label="$2" ctl_ms applied evaluated planned cpu
    ctl_ms=$(cut -d' ' -f1 "$dir/$kind.tsv" | median | us_to_ms)
    applied=-
    evaluated=-
    planned=-
    if [ "$kind" != dry ] && [ "$kind" != eval ]; then
        applied=$(cut -d' ' -f2 "$dir/$kind.tsv" | median)
    fi
    if [ "$kind" != eval ]; then
        evaluated=$(cut -d' ' -f3 "$dir/$kind.tsv" | median)
        planned=$(cut -d' ' -f5 "$dir/$kind.tsv" | median)
    fi
    cpu=$(cut -d' ' -f4 "$dir/$kind.tsv" | median | us_to_ms)
    echo "| $label | $ctl_ms | $applied | $evaluated | $planned | $cpu |"
}

echo "rhai-supervisor reload, $nodes nodes, median of $runs ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "| reload | ctl wall (ms) | applied (ms, supervisor) | scripts evaluated (ms) | planned (ms) | supervisor CPU (ms) |"
echo "|---|---|---|---|---|---|"
row change "one node changed"
row dry "one node changed, --dry-run"
row same "nothing changed"
row eval "for scale: \`ctl eval 1\`"
rss=$(awk '/VmRSS/ {print $2}' /proc/"$sup"/status)
echo
echo "supervisor RSS with $nodes nodes after the reloads: $((rss / 1024)) MiB"
