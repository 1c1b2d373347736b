//! `rhai-supervisor ctl`: one request to a running supervisor, its answer printed for a
//! person (an aligned table for `status`) or as the JSON response (`--json`), and an
//! exit status a shell script can test. With `--ssh`, the same request goes to the
//! supervisor of each host given, through ssh, and the answers are merged (`hosts`).
//! `ctl __relay` is what runs on those hosts (`control::relay`).

mod hosts;

use std::io::{Read, Write};

use serde_json::Value;

use crate::cli::{CtlArgs, CtlCommand};
use crate::config::reload::ReloadReport;
use crate::config::{NodeStatus, OutputLine, Status};
use crate::control::client::DEFAULT_TIMEOUT;
use crate::control::show::status_table;
use crate::control::{
    Client, ClientError, Command, ELSEWHERE, Response, SOCKET_ENV, StreamEvent, Target, Topic,
    decode_config,
};

/// The supervisor did what was asked.
pub const EXIT_OK: i32 = 0;
/// The supervisor said no: unknown node, invalid config, script error.
pub const EXIT_REFUSED: i32 = 1;
/// The command line or its JSON is wrong.
pub const EXIT_USAGE: i32 = 2;
/// No supervisor answered.
pub const EXIT_UNREACHABLE: i32 = crate::control::ssh::NO_SUPERVISOR;

/// Runs `ctl`; returns the exit status.
pub fn run(args: &CtlArgs) -> i32 {
    if let CtlCommand::Relay = args.command {
        return relay(args);
    }
    let command = match command(&args.command, args.json) {
        Ok(command) => command,
        Err(error) => {
            complain(&error);
            return EXIT_USAGE;
        }
    };
    if !args.ssh.is_empty() {
        match command {
            Command::Follow(Topic::Output { .. }) => {
                complain("tail -f follows one supervisor: it takes no --ssh");
                return EXIT_USAGE;
            }
            Command::Follow(Topic::Events) => {
                complain("events follows one supervisor: it takes no --ssh");
                return EXIT_USAGE;
            }
            _ => {}
        }
        return hosts::run(args, command);
    }
    let path = args.socket_path();
    let timeout = args.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if let Command::Follow(Topic::Events) = command {
        return events(args, &path);
    }
    if let Command::Follow(topic) = command {
        return follow(args, &path, topic);
    }
    let response = match Client::connect(&path).and_then(|mut c| {
        c.set_timeout(Some(timeout));
        match command {
            // Printed as it came, or read into records directly: at 10,000 nodes,
            // parsing it into a `Value` first would cost more than the rest.
            Command::Status { .. } => c.call_encoded(command.clone()),
            _ => c.call(command.clone()),
        }
    }) {
        Ok(response) => response,
        Err(error) => {
            unreachable_supervisor(&error);
            return EXIT_UNREACHABLE;
        }
    };
    if args.json {
        write_out(&response.to_line());
    } else {
        for piece in printed(&command, &response) {
            match piece {
                Piece::Out(text) => write_out(text.as_bytes()),
                Piece::Err(text) => write_err(text.as_bytes()),
                Piece::Complaint(text) => complain(&text),
            }
        }
    }
    exit_status(&response)
}

/// `ctl __relay`: the socket over stdin and stdout, for `ctl --ssh` on another host.
fn relay(args: &CtlArgs) -> i32 {
    match crate::control::relay::relay(&args.socket_path()) {
        Ok(()) => EXIT_OK,
        Err(error @ crate::control::relay::RelayError::Connect { .. }) => {
            complain(&error.to_string());
            EXIT_UNREACHABLE
        }
        Err(error) => {
            complain(&error.to_string());
            EXIT_REFUSED
        }
    }
}

fn exit_status(response: &Response) -> i32 {
    // A reload that went through but could not create a node says so in `errors`.
    let errors = response
        .result
        .as_ref()
        .and_then(|r| r.get("errors"))
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty());
    if response.ok && !errors {
        EXIT_OK
    } else {
        EXIT_REFUSED
    }
}

fn unreachable_supervisor(error: &ClientError) {
    complain(&format!(
        "{error} (is a supervisor running? its socket is chosen with --socket PATH or {})",
        SOCKET_ENV
    ));
}

/// `tail -f`: the kept tail, then each new line until the stream ends. Exit status 0
/// when it ends (the node was destroyed, the supervisor stopped) or stdout is closed; 3
/// when the connection is lost without an end.
fn follow(args: &CtlArgs, path: &std::path::Path, topic: Topic) -> i32 {
    let followed = Client::connect(path).and_then(|mut client| client.follow(topic.clone()));
    let (response, stream) = match followed {
        Ok(answer) => answer,
        Err(error) => {
            unreachable_supervisor(&error);
            return EXIT_UNREACHABLE;
        }
    };
    let Some(stream) = stream else {
        if args.json {
            write_out(&response.to_line());
        } else {
            complain(
                response
                    .error
                    .as_deref()
                    .unwrap_or("the supervisor refused"),
            );
        }
        return EXIT_REFUSED;
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        out.write_all(&response.to_line())
    } else {
        let lines: Vec<OutputLine> =
            serde_json::from_value(response.result.clone().unwrap_or(Value::Null))
                .unwrap_or_default();
        lines
            .iter()
            .try_for_each(|line| print_line(&mut out, &line.stream, &line.line))
    };
    if written.and_then(|()| out.flush()).is_err() {
        return EXIT_OK;
    }
    let node = match &topic {
        Topic::Output { node, .. } => node.clone(),
        Topic::Events => String::new(),
    };
    for event in stream {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                complain(&error.to_string());
                return EXIT_UNREACHABLE;
            }
        };
        let written = if args.json {
            out.write_all(&event.to_line(&response.id))
        } else {
            match &event {
                StreamEvent::Item(item) => print_line(
                    &mut out,
                    item["stream"].as_str().unwrap_or("stdout"),
                    item["line"].as_str().unwrap_or_default(),
                ),
                StreamEvent::Missed(n) => {
                    let _ = out.flush();
                    write_err(
                        format!(
                            "rhai-supervisor: missed {n} lines of node '{node}' here: this follower did not keep up\n"
                        )
                        .as_bytes(),
                    );
                    Ok(())
                }
                StreamEvent::End(reason) => {
                    let _ = out.flush();
                    write_err(format!("rhai-supervisor: {reason}\n").as_bytes());
                    Ok(())
                }
            }
        };
        // A closed stdout (`tail -f w1 | head`) ends the follow.
        if written.and_then(|()| out.flush()).is_err() {
            return EXIT_OK;
        }
    }
    EXIT_OK
}

/// `ctl events`: each event as it comes, until the stream ends. Exit statuses as for
/// `tail -f`.
fn events(args: &CtlArgs, path: &std::path::Path) -> i32 {
    let followed = Client::connect(path).and_then(|mut client| client.follow(Topic::Events));
    let (response, stream) = match followed {
        Ok(answer) => answer,
        Err(error) => {
            unreachable_supervisor(&error);
            return EXIT_UNREACHABLE;
        }
    };
    let Some(stream) = stream else {
        complain(
            response
                .error
                .as_deref()
                .unwrap_or("the supervisor refused"),
        );
        return EXIT_REFUSED;
    };
    let mut out = std::io::stdout().lock();
    for event in stream {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                let _ = out.flush();
                complain(&error.to_string());
                return EXIT_UNREACHABLE;
            }
        };
        let written = match (&event, args.json) {
            // In the supervisor's order of fields (ts, node, event first), not sorted.
            (StreamEvent::Item(item), true) => {
                match serde_json::from_value::<crate::config::Event>(item.clone()) {
                    Ok(event) => writeln!(out, "{}", event.to_json()),
                    Err(_) => writeln!(out, "{item}"),
                }
            }
            (StreamEvent::Item(item), false) => {
                match serde_json::from_value::<crate::config::Event>(item.clone()) {
                    Ok(event) => writeln!(out, "{}", event_line(&event)),
                    Err(_) => writeln!(out, "{item}"),
                }
            }
            (StreamEvent::Missed(n), true) => writeln!(out, "{}", serde_json::json!({"missed": n})),
            (StreamEvent::Missed(n), false) => {
                let _ = out.flush();
                write_err(
                    format!(
                        "rhai-supervisor: missed {n} events here: this follower did not keep up\n"
                    )
                    .as_bytes(),
                );
                Ok(())
            }
            (StreamEvent::End(reason), true) => {
                writeln!(out, "{}", serde_json::json!({"end": reason}))
            }
            (StreamEvent::End(reason), false) => {
                let _ = out.flush();
                write_err(format!("rhai-supervisor: {reason}\n").as_bytes());
                Ok(())
            }
        };
        // A closed stdout (`ctl events | head`) ends the follow.
        if written.and_then(|()| out.flush()).is_err() {
            return EXIT_OK;
        }
    }
    EXIT_OK
}

/// `03:12:01 web started (pid 4242)`: an event for a person, at the local time.
pub fn event_line(event: &crate::config::Event) -> String {
    let clock = crate::config::time::parse_rfc3339(&event.ts)
        .map(crate::config::time::local_clock)
        .unwrap_or_else(|| event.ts.clone());
    match &event.node {
        Some(node) => format!("{clock} {node} {}", event.describe()),
        None => format!("{clock} {}", event.describe()),
    }
}

/// One line of a node: stdout lines to stdout, stderr lines to stderr.
fn print_line(out: &mut impl Write, stream: &str, line: &str) -> std::io::Result<()> {
    if stream == "stderr" {
        out.flush()?;
        write_err(format!("{line}\n").as_bytes());
        Ok(())
    } else {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")
    }
}

/// The request a command line asks for.
fn command(command: &CtlCommand, json: bool) -> Result<Command, String> {
    let target = |name: &Option<String>, all: bool| match (name, all) {
        (Some(name), false) => Ok(Target::Node(name.clone())),
        (None, true) => Ok(Target::All),
        _ => Err("give a node name or --all".to_string()),
    };
    Ok(match command {
        // A table shows every node's CPU % and memory; JSON has them when asked.
        CtlCommand::Status { name, usage } => Command::Status {
            node: name.clone(),
            usage: *usage || !json,
        },
        CtlCommand::Create { config } => {
            let text = match config.strip_prefix('@') {
                Some("-") => read_stdin()?,
                Some(file) => std::fs::read_to_string(file).map_err(|e| {
                    format!(
                        "cannot read node configuration '{file}': {}",
                        crate::process::os_error(&e)
                    )
                })?,
                None => config.clone(),
            };
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| format!("the node configuration is not valid JSON: {e}"))?;
            if !value.is_object() {
                return Err("the node configuration must be a JSON object".into());
            }
            Command::Create(Box::new(decode_config(value)?))
        }
        CtlCommand::Destroy { name, all } => Command::Destroy(target(name, *all)?),
        CtlCommand::Restart { name, all } => Command::Restart(target(name, *all)?),
        CtlCommand::Signal { args, all } => {
            let (name, signal) = match (args.as_slice(), all) {
                ([signal], true) => (None, signal),
                ([name, signal], false) => (Some(name.clone()), signal),
                _ => return Err("give a node name and a signal, or --all and a signal".into()),
            };
            let name = &name;
            if crate::config::SignalName::lookup(signal).is_none() {
                return Err(format!(
                    "unknown signal '{signal}' (a name such as HUP or SIGUSR1, or a number)"
                ));
            }
            Command::Signal {
                target: target(name, *all)?,
                signal: signal.clone(),
            }
        }
        CtlCommand::Stop => Command::Stop,
        CtlCommand::Tail {
            name,
            lines,
            follow: true,
        } => Command::Follow(Topic::Output {
            node: name.clone(),
            lines: *lines,
        }),
        CtlCommand::Tail { name, lines, .. } => Command::Tail {
            node: name.clone(),
            lines: *lines,
        },
        CtlCommand::Events => Command::Follow(Topic::Events),
        CtlCommand::Eval { code } if code == "-" => Command::Eval(read_stdin()?),
        CtlCommand::Eval { code } => Command::Eval(code.clone()),
        CtlCommand::Reload { dry_run } => Command::Reload { dry_run: *dry_run },
        CtlCommand::Relay => return Err("__relay is not a request".into()),
    })
}

fn read_stdin() -> Result<String, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read stdin: {}", crate::process::os_error(&e)))?;
    Ok(text)
}

/// A piece of what `ctl` prints for an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Text for stdout (whole lines, except what an `eval` printed without one).
    Out(String),
    /// Text for stderr: a node's stderr lines (`tail`).
    Err(String),
    /// An error to report, one line, without the program's prefix.
    Complaint(String),
}

/// What an answer prints for a person.
fn printed(command: &Command, response: &Response) -> Vec<Piece> {
    let mut pieces = Vec::new();
    if !response.ok {
        if let Some(output) = &response.output {
            pieces.push(Piece::Out(output.clone()));
        }
        let error = response
            .error
            .as_deref()
            .unwrap_or("the supervisor refused");
        pieces.push(Piece::Complaint(error.to_string()));
        return pieces;
    }
    let result = response.result.clone().unwrap_or(Value::Null);
    match command {
        Command::Status { .. } | Command::StatusOf(_) => match match &response.encoded {
            Some(text) => serde_json::from_str::<Status>(text),
            None => serde_json::from_value::<Status>(result),
        } {
            Ok(status) => pieces.push(Piece::Out(status_table(&status))),
            Err(e) => pieces.push(Piece::Complaint(format!("cannot read the status: {e}"))),
        },
        Command::Create(config) => {
            let status = serde_json::from_value::<NodeStatus>(result).ok();
            let line = match status {
                Some(status) if status.state == ELSEWHERE => {
                    let host = config
                        .cluster
                        .get(&config.name)
                        .map_or("", |endpoint| endpoint.host.as_str());
                    format!(
                        "node '{}' belongs to host '{host}'; it was not started here\n",
                        config.name
                    )
                }
                Some(NodeStatus { pid: Some(pid), .. }) => {
                    format!("created node '{}' (pid {pid})\n", config.name)
                }
                _ => format!("created node '{}'\n", config.name),
            };
            pieces.push(Piece::Out(line));
        }
        Command::Destroy(_) | Command::Restart(_) | Command::Signal { .. } => {
            let verb = match command {
                Command::Destroy(_) => "destroyed".to_string(),
                Command::Signal { signal, .. } => format!("sent {signal} to"),
                _ => "restarted".to_string(),
            };
            let names: Vec<String> = serde_json::from_value(result).unwrap_or_default();
            let line = match names.as_slice() {
                [] => "there are no nodes\n".to_string(),
                [one] => format!("{verb} node '{one}'\n"),
                many => format!("{verb} {} nodes: {}\n", many.len(), many.join(", ")),
            };
            pieces.push(Piece::Out(line));
        }
        Command::Stop => pieces.push(Piece::Out("the supervisor is stopping\n".into())),
        Command::Tail { .. } | Command::Follow(_) => {
            let lines: Vec<OutputLine> = serde_json::from_value(result).unwrap_or_default();
            for line in lines {
                let text = format!("{}\n", line.line);
                if line.stream == "stderr" {
                    pieces.push(Piece::Err(text));
                } else {
                    pieces.push(Piece::Out(text));
                }
            }
        }
        Command::Reload { .. } => match serde_json::from_value::<ReloadReport>(result) {
            Ok(report) => pieces.extend(reload_pieces(&report)),
            Err(e) => pieces.push(Piece::Complaint(format!("cannot read the plan: {e}"))),
        },
        Command::Eval(_) => {
            if let Some(output) = &response.output {
                pieces.push(Piece::Out(output.clone()));
            }
            match result {
                Value::String(text) if text == "()" => {}
                Value::String(text) => pieces.push(Piece::Out(format!("{text}\n"))),
                other => pieces.push(Piece::Out(format!("{other}\n"))),
            }
        }
    }
    pieces
}

/// A reload's plan, one node a line on stdout; the creates the scripts got refused, as
/// warnings on stderr; what could not be done, as errors.
fn reload_pieces(report: &ReloadReport) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut plan = String::new();
    for line in &report.nodes {
        plan.push_str(&line.to_string());
        plan.push('\n');
    }
    pieces.push(Piece::Out(plan));
    for refused in &report.refused {
        pieces.push(Piece::Err(format!(
            "rhai-supervisor: warning: Supervisor::create refused: {refused}\n"
        )));
    }
    for error in &report.errors {
        pieces.push(Piece::Complaint(error.clone()));
    }
    pieces
}

fn complain(message: &str) {
    write_err(format!("rhai-supervisor: error: {message}\n").as_bytes());
}

/// Writes to stdout; a closed pipe (`ctl status | head -1`) is not an error.
fn write_out(bytes: &[u8]) {
    let _ = std::io::stdout().lock().write_all(bytes);
}

fn write_err(bytes: &[u8]) {
    let _ = std::io::stderr().lock().write_all(bytes);
}
