#!/usr/bin/env python3
"""Readiness and dependencies, measured (not part of `cargo test`):

1. from a node's READY=1 to its dependent's exec, against one fork/exec of the same
   program from a C parent (the floor), both measured by the child's own clock;
2. start-up of 1000 nodes in 10 tiers (each node depends on every node of the tier
   before, every node ready: "notify" and ready at once), against the same 1000 nodes
   with no dependencies;
3. the supervisor's CPU with 1000 nodes under a `health: #{tcp: ...}` check every 10 s.

    python3 benches/readiness/bench.py [--runs 3] [--quick]

Builds the release binary and the two helper programs (gcc). Prints medians and ratios
for BENCHMARKS.md.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "benches", "readiness")
OUT = os.path.join(ROOT, "target", "readiness")
BINARY = os.path.join(ROOT, "target", "release", "rhai-supervisor")


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    os.makedirs(OUT, exist_ok=True)
    for name in ["stamp", "spawn-floor"]:
        subprocess.run(
            ["gcc", "-O2", "-o", os.path.join(OUT, name), os.path.join(HERE, name + ".c")],
            check=True,
        )


def run_until(script_text, marker, timeout=300):
    """Runs a supervisor on the script until it prints `marker`; returns the seconds
    from its start to the marker, then stops it."""
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "s.rhai")
        with open(path, "w") as f:
            f.write(script_text)
        start = time.monotonic()
        proc = subprocess.Popen(
            [BINARY, "-q", "run", "--no-socket", path],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        took = None
        deadline = start + timeout
        for line in proc.stdout:
            if marker in line:
                took = time.monotonic() - start
                break
            if time.monotonic() > deadline:
                break
        proc.terminate()
        proc.wait(timeout=60)
        return took


def ready_to_exec(pairs, work):
    """Median microseconds from a node's READY=1 to its dependent's exec."""
    stamp = os.path.join(OUT, "stamp")
    lines = []
    for i in range(pairs):
        lines.append(
            f'schedule({20 * i}, || {{'
            f' Supervisor::create(#{{name: "a{i}", ready: "notify", command: ["{stamp}"],'
            f' env: #{{READY_FILE: "{work}/ready-{i}"}}}});'
            f' Supervisor::create(#{{name: "b{i}", depends_on: ["a{i}"], command: ["{stamp}"],'
            f' env: #{{STAMP_FILE: "{work}/exec-{i}"}}}}); }});'
        )
    lines.append(
        "let up = 0;\n"
        "fn node_ready(node) { if node.starts_with(\"b\") { up += 1; "
        f"if up == {pairs} {{ print(\"all up\"); }} }} }}"
    )
    took = run_until("\n".join(lines), "all up")
    assert took is not None, "the pairs never came up"
    samples = []
    for i in range(pairs):
        ready = int(open(f"{work}/ready-{i}").read())
        exec_at = int(open(f"{work}/exec-{i}").read())
        samples.append((exec_at - ready) / 1000)
    return statistics.median(samples)


def spawn_floor(tries, work):
    out = subprocess.run(
        [os.path.join(OUT, "spawn-floor"), os.path.join(OUT, "stamp"), str(tries), work],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return statistics.median(int(x) / 1000 for x in out.split())


def tiers_script(n, tiers):
    stamp = os.path.join(OUT, "stamp")
    per = n // tiers
    lines = ["fn zeek_init() {"]
    lines.append(f"  for t in 0..{tiers} {{")
    lines.append(f"    let deps = if t == 0 {{ [] }} else {{ let d = []; for j in 0..{per} {{ d.push(`t${{t - 1}}-${{j}}`); }} d }};")
    lines.append(f"    for j in 0..{per} {{")
    lines.append(
        f'      Supervisor::create(#{{name: `t${{t}}-${{j}}`, ready: "notify", command: ["{stamp}"], depends_on: deps}});'
    )
    lines.append("    }")
    lines.append("  }")
    lines.append("}")
    lines.append(
        f"let up = 0;\nfn node_ready(node) {{ up += 1; if up == {n} {{ print(\"all ready\"); }} }}"
    )
    return "\n".join(lines)


def flat_script(n):
    stamp = os.path.join(OUT, "stamp")
    return (
        "fn zeek_init() {\n"
        f"  for i in 0..{n} {{ Supervisor::create(#{{name: `n${{i}}`, ready: \"notify\", command: [\"{stamp}\"]}}); }}\n"
        "}\n"
        f"let up = 0;\nfn node_ready(node) {{ up += 1; if up == {n} {{ print(\"all ready\"); }} }}"
    )


def health_cpu(n, seconds):
    """CPU ticks of the supervisor per node and check, with `n` nodes checked by TCP
    every 10 s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                conn.close()
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    stamp = os.path.join(OUT, "stamp")
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "s.rhai")
        with open(path, "w") as f:
            f.write(
                "fn zeek_init() {\n"
                f"  for i in 0..{n} {{ Supervisor::create(#{{name: `n${{i}}`, command: [\"{stamp}\"], health: #{{tcp: {port}, interval: 10}}}}); }}\n"
                "  print(\"created\");\n}\n"
            )
        proc = subprocess.Popen(
            [BINARY, "-q", "run", "--no-socket", path],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for line in proc.stdout:
            if "created" in line:
                break
        time.sleep(12)  # every node's first check has run; from here on, steady state

        def ticks():
            fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])

        before = ticks()
        time.sleep(seconds)
        used = ticks() - before
        proc.terminate()
        proc.wait(timeout=60)
    stop.set()
    checks = n * seconds / 10
    hz = os.sysconf("SC_CLK_TCK")
    return used, used / hz / checks * 1e6, used / hz / seconds * 100


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    build()
    print(f"# readiness benchmark, {runs} run(s), {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")

    latency, floor = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as work:
            latency.append(ready_to_exec(50, work))
        with tempfile.TemporaryDirectory() as work:
            floor.append(spawn_floor(50, work))
    lat, flo = statistics.median(latency), statistics.median(floor)
    print(f"READY=1 -> dependent's exec: median {lat:.0f} us; fork/exec floor {flo:.0f} us; ratio {lat / flo:.2f}x")

    n = 200 if args.quick else 1000
    graph, flat = [], []
    for _ in range(runs):
        flat.append(run_until(flat_script(n), "all ready"))
        graph.append(run_until(tiers_script(n, 10), "all ready"))
    g, f = statistics.median(graph), statistics.median(flat)
    ratios = statistics.median(a / b for a, b in zip(graph, flat))
    print(f"{n} nodes ready, 10 tiers: median {g * 1000:.0f} ms; flat: {f * 1000:.0f} ms; ratio {ratios:.2f}x")

    used, per_check_us, percent = health_cpu(n, 10 if args.quick else 30)
    print(
        f"{n} nodes, health tcp every 10 s: {used} ticks in the window, "
        f"{per_check_us:.0f} us of CPU per check, {percent:.2f} % of a core"
    )


if __name__ == "__main__":
    sys.exit(main())
