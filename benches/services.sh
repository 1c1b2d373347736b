#!/usr/bin/env bash
# What running services costs at start-up: N command nodes started by one script, with
# no limits, with a cgroup per node (`limits: #{pids: 1000}`), and as another user
# (`user: "nobody"`), in the same run, the variants taken in turn within each round so
# that a change in the machine's load falls on all of them. Figures: BENCHMARKS.md,
# "Running services". Not part of `cargo test`.
#
#   sudo bash benches/services.sh                  # N=200,1000, 7 rounds
#   sudo bash benches/services.sh --n 200 --runs 3
#
# Each node is `sh -c 'echo up; exec sleep 300'`. A figure is the time from the
# script's first line to the N-th `up` on the supervisor's stdout (every node has
# exec'd and run), as the driver below reads it; the median over the rounds is
# reported, with the fastest and slowest. Needs root (cgroups and users), Python 3,
# and a release build (made if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ns="200,1000"
runs=7
while [ $# -gt 0 ]; do
    case "$1" in
    --n) ns="$2"; shift ;;
    --runs) runs="$2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$(id -u)" != 0 ]; then
    echo "benches/services.sh: needs root (cgroups and another user)" >&2
    exit 2
fi
cargo build --release --quiet
binary="$PWD/target/release/rhai-supervisor"
work="$(mktemp -d)"
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

for n in ${ns//,/ }; do
    for variant in none pids user; do
        case "$variant" in
        none) extra="" ;;
        pids) extra="limits: #{pids: 1000}," ;;
        user) extra="user: \"nobody\"," ;;
        esac
        cat > "$work/$variant-$n.rhai" <<EOF
print("start");
let t = timestamp();
for i in 0..$n {
    let answer = Supervisor::create(#{name: \`n\${i}\`, $extra
        command: ["sh", "-c", "echo up; exec sleep 300"]});
    if answer != "" { print(\`failed: \${answer}\`); terminate(); }
}
print(\`created \${t.elapsed}\`);
EOF
    done
done

python3 - "$binary" "$work" "$ns" "$runs" <<'EOF'
import os, signal, statistics, subprocess, sys, time

binary, work, ns, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ns = [int(n) for n in ns.split(",")]
variants = ["none", "pids", "user"]

def once(script, n):
    """Seconds from "start" to the n-th "up", and the script's create loop."""
    p = subprocess.Popen([binary, "-q", "run", "--no-socket", script], cwd=work,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    start, up, created = None, 0, None
    for line in p.stdout:
        line = line.decode(errors="replace")
        if line == "start\n":
            start = time.monotonic()
        elif line.endswith("] up\n"):
            up += 1
            if up == n:
                end = time.monotonic()
                break
        elif line.startswith("created "):
            created = float(line.split()[1])
        elif line.startswith("failed"):
            p.kill()
            sys.exit(f"{script}: {line.strip()}")
    p.send_signal(signal.SIGTERM)
    for line in p.stdout:
        if created is None and line.startswith(b"created "):
            created = float(line.split()[1])
    p.wait()
    return end - start, created or 0.0

results = {}
for n in ns:
    for _ in range(runs):
        for v in variants:
            results.setdefault((n, v), []).append(once(f"{work}/{v}-{n}.rhai", n))

print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; {runs} rounds; medians (fastest-slowest)")
print()
print("| nodes | variant | all up | ratio | create loop |")
print("|---|---|---|---|---|")
for n in ns:
    base = statistics.median(t for t, _ in results[(n, "none")])
    for v in variants:
        ups = [t for t, _ in results[(n, v)]]
        loops = [c for _, c in results[(n, v)]]
        up = statistics.median(ups)
        label = {"none": "no limits", "pids": "limits: #{pids: 1000}", "user": 'user: "nobody"'}[v]
        print(f"| {n} | {label} | {up*1000:.0f} ms ({min(ups)*1000:.0f}-{max(ups)*1000:.0f}) | "
              f"{up/base:.2f} | {statistics.median(loops)*1000:.0f} ms |")
EOF
