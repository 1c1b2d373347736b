//! `rhai-supervisor`: parse the command line, call the library, map the outcome to an
//! exit status (0 clean, 1 a script or setup failed, 2 usage).

use clap::Parser;
use rhai_supervisor::cli::{Cli, Command};
use rhai_supervisor::console::Writer;
use rhai_supervisor::process::Stream;
use rhai_supervisor::runtime::{Error, Runtime, Settings};
use rhai_supervisor::script::Role;
use simplelog::{ConfigBuilder, WriteLogger};

fn main() {
    let cli = Cli::parse();
    let mut level = cli.log_level();
    let payload = match &cli.command {
        Command::Node { .. } => match rhai_supervisor::node::take_payload() {
            Ok(payload) => {
                if let Ok(l) = payload.log_level.parse() {
                    level = l;
                }
                Some(payload)
            }
            Err(e) => fail(&e),
        },
        _ => None,
    };
    init_logging(level);
    let settings = Settings {
        log_level: level,
        ..Settings::default()
    };
    let outcome = match (cli.command, payload) {
        (Command::Node { .. }, Some(payload)) => rhai_supervisor::node::run(payload, &settings),
        (Command::Run { scripts }, _) => serve(Role::Supervisor, &scripts, &settings),
        (Command::Exec { scripts }, _) => serve(Role::Plain, &scripts, &settings),
        (Command::Repl { scripts }, _) => rhai_supervisor::repl::run(&scripts, &settings),
        (Command::Node { .. }, None) => unreachable!("the payload was read above"),
    };
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(e) => fail(&e.to_string()),
    }
}

fn serve(role: Role, scripts: &[std::path::PathBuf], settings: &Settings) -> Result<i32, Error> {
    let mut runtime = Runtime::new(role, scripts, None, settings)?;
    runtime.start(scripts)?;
    Ok(runtime.run())
}

fn fail(message: &str) -> ! {
    eprintln!("rhai-supervisor: error: {message}");
    std::process::exit(1)
}

fn init_logging(level: log::LevelFilter) {
    let config = ConfigBuilder::new()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .set_location_level(log::LevelFilter::Off)
        .build();
    // Through the console, so an interactive front end can print logs above its prompt.
    let _ = WriteLogger::init(level, config, Writer::new(Stream::Stderr));
}
