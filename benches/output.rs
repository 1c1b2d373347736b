//! How fast node output gets through the supervisor.
//!
//!     cargo bench --bench output            (about a minute)
//!     cargo bench --bench output -- quick   (fewer lines and runs)
//!
//! For each case a supervisor (the release binary) runs nodes that write LINES lines of
//! 60 bytes in total and exit; this program reads the supervisor's stdout and stops the
//! clock at the last line. Cases: the default printer (`[node] line`) and a Rhai
//! `stdout_hook`, each with 1 node and with 50 nodes writing at once. The baseline is
//! `cat` moving the same bytes from the same producer through a pipe, measured in the
//! same run. CPU is the supervisor's (all its threads, from /proc/PID/task/*/schedstat,
//! in nanoseconds), per million lines. Medians of RUNS runs; ratios run by run.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LINE: &str = "0123456789 output line from a node under test 0123456789";

struct Measure {
    seconds: f64,
    cpu_ns: u64,
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let (lines, runs) = if quick { (200_000, 3) } else { (1_000_000, 5) };
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_rhai-supervisor"));
    let dir = std::env::temp_dir().join(format!(
        "rhai-supervisor-bench-output-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("cannot create a work directory");

    println!(
        "# output throughput: {lines} lines of {} bytes, median of {runs} runs",
        LINE.len() + 1
    );
    println!("# binary: {}", binary.display());
    let cases: [(&str, usize, bool); 4] = [
        ("default printer, 1 node", 1, false),
        ("default printer, 50 nodes", 50, false),
        ("stdout_hook, 1 node", 1, true),
        ("stdout_hook, 50 nodes", 50, true),
    ];
    let mut table = Vec::new();
    for (name, nodes, hook) in cases {
        let mut speeds = Vec::new();
        let mut ratios = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..runs {
            let base = cat_baseline(lines, nodes);
            let ours = supervisor_run(&binary, &dir, lines, nodes, hook);
            speeds.push(lines as f64 / ours.seconds);
            ratios.push(ours.seconds / base.seconds);
            cpu.push(ours.cpu_ns as f64 / lines as f64 * 1e6 / 1e6); // ms per million lines
        }
        table.push((
            name,
            median(&mut speeds),
            median(&mut ratios),
            median(&mut cpu),
        ));
    }
    let mut cat = Vec::new();
    let mut cat_cpu = Vec::new();
    for _ in 0..runs {
        let base = cat_baseline(lines, 1);
        cat.push(lines as f64 / base.seconds);
        cat_cpu.push(base.cpu_ns as f64 / lines as f64 * 1e6 / 1e6);
    }
    println!();
    println!(
        "| case | lines/s | time vs cat (same producers) | supervisor CPU per million lines |"
    );
    println!("|---|---|---|---|");
    println!(
        "| cat through a pipe (baseline) | {:.0} | 1.00× | {:.0} ms (cat) |",
        median(&mut cat),
        median(&mut cat_cpu)
    );
    for (name, speed, ratio, cpu) in table {
        println!("| {name} | {speed:.0} | {ratio:.2}× | {cpu:.0} ms |");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// The producer every case uses: `lines` copies of LINE on stdout.
fn producer(lines: usize) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("yes '{LINE}' | head -n {lines}"),
    ]
}

/// CPU time of every thread of `pid`, in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `cat` moving the output of `producers` producers (sharing one pipe, as the nodes of
/// a case share the supervisor) to this program.
fn cat_baseline(lines: usize, producers: usize) -> Measure {
    let one = producer(lines / producers).remove(2);
    let all = format!("for i in $(seq {producers}); do ( {one} ) & done; wait");
    let mut source = Command::new("sh")
        .args(["-c", &all])
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot start the producers");
    let start = Instant::now();
    let mut cat = Command::new("cat")
        .stdin(source.stdout.take().expect("piped"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot start cat");
    let mut out = cat.stdout.take().expect("piped");
    let mut seen = 0;
    let mut buf = vec![0u8; 1 << 16];
    while seen < lines / producers * producers {
        let n = out.read(&mut buf).expect("cannot read from cat");
        if n == 0 {
            break;
        }
        seen += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_ns(cat.id());
    let _ = cat.wait();
    let _ = source.wait();
    assert_eq!(seen, lines / producers * producers, "cat lost lines");
    Measure {
        seconds,
        cpu_ns: cpu,
    }
}

fn supervisor_run(binary: &Path, dir: &Path, lines: usize, nodes: usize, hook: bool) -> Measure {
    let per_node = lines / nodes;
    let command = producer(per_node);
    let command = format!(
        "[{}]",
        command
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut script = String::new();
    if hook {
        script.push_str(&format!(
            "let seen = 0;\nfn stdout_hook(node, line) {{ seen += 1; if seen == {} {{ print(\"all lines seen\"); }} false }}\n",
            per_node * nodes
        ));
    }
    script.push_str(&format!(
        "for i in 0..{nodes} {{ Supervisor::create(#{{name: `n${{i}}`, revival_delay: 3600, command: {command}}}); }}\n"
    ));
    let path = dir.join("bench.rhai");
    std::fs::write(&path, script).expect("cannot write the script");
    let start = Instant::now();
    let mut child = Command::new(binary)
        .args(["-qq", "run"])
        .arg(&path)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start the supervisor");
    let before = cpu_ns(child.id());
    let mut out = BufReader::with_capacity(1 << 16, child.stdout.take().expect("piped"));
    let wanted = if hook { 1 } else { per_node * nodes };
    let mut seen = 0;
    let mut line = Vec::new();
    while seen < wanted {
        line.clear();
        match out.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if hook {
                    if line.starts_with(b"all lines seen") {
                        seen += 1;
                    }
                } else if line.starts_with(b"[n") {
                    seen += 1;
                }
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_ns(child.id()).saturating_sub(before);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { kill(child.id() as i32, 15) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        let mut sink = [0u8; 4096];
        let _ = out.get_mut().read(&mut sink);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen, wanted, "the supervisor lost lines");
    Measure {
        seconds,
        cpu_ns: cpu,
    }
}

unsafe extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}
