/work/main/benches/peers/probe/target/release/deps/peerbench-7dee0bace3fbf57e.d: src/main.rs src/events.rs src/peers.rs src/procfs.rs src/report.rs

/work/main/benches/peers/probe/target/release/deps/peerbench-7dee0bace3fbf57e: src/main.rs src/events.rs src/peers.rs src/procfs.rs src/report.rs

src/main.rs:
src/events.rs:
src/peers.rs:
src/procfs.rs:
src/report.rs:
