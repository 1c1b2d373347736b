//! Embedding rhai-supervisor in a Rust program: the program creates a node from Rust,
//! and a policy written in Rhai reacts to its starts.
//!
//!     cargo run --example embed
//!
//! The node is a shell loop that prints a line and exits; the supervisor revives it,
//! and the Rhai `node_status` hook stops everything after the third start.

use rhai_supervisor::{NodeConfig, Role, Runtime, Settings};

fn main() {
    let settings = Settings::default();
    // Script nodes re-execute this program; let it serve them.
    if let Some(code) = rhai_supervisor::node::serve_if_node(&settings) {
        std::process::exit(code);
    }
    if let Err(e) = supervise(&settings) {
        eprintln!("embed: {e}");
        std::process::exit(1);
    }
}

fn supervise(settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    let mut runtime = Runtime::new(Role::Supervisor, &[], None, settings)?;
    runtime.start(&[])?;
    // The value of the last statement is not needed here.
    let _ = runtime.eval(
        r#"
        let starts = 0;
        fn node_status(node, pid) {
            starts += 1;
            print(`${node} started as pid ${pid} (start ${starts})`);
            if starts == 3 { terminate(); }
        }
        fn stdout_hook(node, line) { print(`${node} says: ${line}`); false }
        "#,
    )?;
    let mut ticker = NodeConfig::named("ticker");
    ticker.command = Some(vec![
        "sh".into(),
        "-c".into(),
        "echo tick; sleep 0.2".into(),
    ]);
    ticker.revival_delay = Some(0.1);
    runtime.create(ticker)?;
    let code = runtime.run();
    println!("supervisor finished with status {code}");
    Ok(())
}
