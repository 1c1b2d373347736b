//! `rhai-supervisor`: parse the command line, call the library, map the outcome to an
//! exit status (0 clean, 1 a script or setup failed, 2 usage; `ctl` adds 3, no
//! supervisor answered).

use std::path::PathBuf;

use clap::Parser;
use rhai_supervisor::cli::{Cli, Command, LogFormat};
use rhai_supervisor::config::Stream;
use rhai_supervisor::console::{JsonLogger, Writer};
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
    match cli.log_format {
        LogFormat::Json => {
            let _ = JsonLogger::init(level);
        }
        LogFormat::Text => init_logging(level),
    }
    let mut settings = Settings::default();
    settings.log_level = level;
    settings.subreaper = true;
    settings.hangup_reloads = true;
    settings.limits.call_time = cli.call_time_limit;
    if let Some(ms) = payload.as_ref().and_then(|p| p.call_time_ms) {
        settings.limits.call_time = std::time::Duration::from_millis(ms);
    }
    if let Command::Run { host, metrics, .. } | Command::Repl { host, metrics, .. } = &cli.command {
        settings.host = host.names.clone();
        settings.metrics = metrics.address.clone();
    }
    settings.notify_service_manager = matches!(cli.command, Command::Run { .. });
    let outcome = match (payload, cli.command) {
        (Some(payload), _) => rhai_supervisor::node::run(payload, &settings),
        (
            None,
            Command::Run {
                scripts, socket, ..
            },
        ) => serve(Role::Supervisor, &scripts, socket.path(), &settings),
        (None, Command::Exec { scripts }) => serve(Role::Plain, &scripts, None, &settings),
        (
            None,
            Command::Repl {
                attach: Some(path),
                ssh: Some(host),
                remote_command,
                ..
            },
        ) => rhai_supervisor::repl::attach_over_ssh(&host, &remote_command, path.as_deref())
            .map_err(Error::Setup),
        (
            None,
            Command::Repl {
                attach: Some(path), ..
            },
        ) => rhai_supervisor::repl::attach(&rhai_supervisor::config::socket_path(path.as_deref()))
            .map_err(Error::Setup),
        (
            None,
            Command::Repl {
                scripts, socket, ..
            },
        ) => rhai_supervisor::runtime::repl(&scripts, socket.path(), &settings),
        (None, Command::Stem) => Ok(rhai_supervisor::node::serve_stem(init_logging)),
        (None, Command::Collect) => Ok(rhai_supervisor::node::serve_collector()),
        (None, Command::Ctl(args)) => Ok(rhai_supervisor::ctl::run(&args)),
        (None, Command::Top(args)) => Ok(rhai_supervisor::top::run(&args)),
        (None, Command::Completions { shell }) => {
            use std::io::Write;
            let script = rhai_supervisor::cli::completions(shell);
            // A closed stdout is not an error.
            let _ = std::io::stdout().lock().write_all(&script);
            Ok(0)
        }
        (None, Command::Man) => match rhai_supervisor::cli::man_page(&mut std::io::stdout().lock())
        {
            // A closed stdout (`man | head`) is not an error.
            Ok(()) => Ok(0),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
            Err(e) => Err(Error::Setup(format!("cannot write the manual page: {e}"))),
        },
        (None, Command::Node { .. }) => Err(Error::Setup("no node payload".into())),
    };
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(e) => fail(&e.to_string()),
    }
}

fn serve(
    role: Role,
    scripts: &[PathBuf],
    socket: Option<PathBuf>,
    settings: &Settings,
) -> Result<i32, Error> {
    let mut runtime = Runtime::new(role, scripts, None, settings)?;
    if let Some(path) = socket {
        runtime.listen(&path)?;
    }
    if let Some(address) = &settings.metrics {
        runtime.serve_metrics(address)?;
    }
    runtime.start(scripts)?;
    let code = runtime.run();
    runtime.finish();
    Ok(code)
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
