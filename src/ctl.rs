//! `rhai-supervisor ctl`: one request to a running supervisor, its answer printed for a
//! person (an aligned table for `status`) or as the JSON response (`--json`), and an
//! exit status a shell script can test.

use std::io::{Read, Write};

use serde_json::Value;

use crate::cli::{CtlArgs, CtlCommand};
use crate::config::{NodeStatus, OutputLine, Status};
use crate::control::show::status_table;
use crate::control::{
    Client, ClientError, Command, Response, SOCKET_ENV, StreamEvent, Target, Topic, decode_config,
};

/// The supervisor did what was asked.
pub const EXIT_OK: i32 = 0;
/// The supervisor said no: unknown node, invalid config, script error.
pub const EXIT_REFUSED: i32 = 1;
/// The command line or its JSON is wrong.
pub const EXIT_USAGE: i32 = 2;
/// No supervisor answered.
pub const EXIT_UNREACHABLE: i32 = 3;

/// Runs `ctl`; returns the exit status.
pub fn run(args: &CtlArgs) -> i32 {
    let command = match command(&args.command) {
        Ok(command) => command,
        Err(error) => {
            complain(&error);
            return EXIT_USAGE;
        }
    };
    let path = args.socket_path();
    if let Command::Follow(topic) = command {
        return follow(args, &path, topic);
    }
    let response = match Client::connect(&path).and_then(|mut c| c.call(command.clone())) {
        Ok(response) => response,
        Err(error) => {
            unreachable_supervisor(&error);
            return EXIT_UNREACHABLE;
        }
    };
    if args.json {
        write_out(&response.to_line());
    } else if response.ok {
        print_result(&command, &response);
    } else {
        if let Some(output) = &response.output {
            write_out(output.as_bytes());
        }
        complain(
            response
                .error
                .as_deref()
                .unwrap_or("the supervisor refused"),
        );
    }
    if response.ok { EXIT_OK } else { EXIT_REFUSED }
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
fn command(command: &CtlCommand) -> Result<Command, String> {
    let target = |name: &Option<String>, all: bool| match (name, all) {
        (Some(name), false) => Ok(Target::Node(name.clone())),
        (None, true) => Ok(Target::All),
        _ => Err("give a node name or --all".to_string()),
    };
    Ok(match command {
        CtlCommand::Status { name } => Command::Status(name.clone()),
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
        CtlCommand::Eval { code } if code == "-" => Command::Eval(read_stdin()?),
        CtlCommand::Eval { code } => Command::Eval(code.clone()),
    })
}

fn read_stdin() -> Result<String, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read stdin: {}", crate::process::os_error(&e)))?;
    Ok(text)
}

/// Prints a successful answer for a person.
fn print_result(command: &Command, response: &Response) {
    let result = response.result.clone().unwrap_or(Value::Null);
    match command {
        Command::Status(_) => match serde_json::from_value::<Status>(result) {
            Ok(status) => write_out(status_table(&status).as_bytes()),
            Err(e) => complain(&format!("cannot read the status: {e}")),
        },
        Command::Create(config) => {
            let pid = serde_json::from_value::<NodeStatus>(result)
                .ok()
                .and_then(|s| s.pid);
            let line = match pid {
                Some(pid) => format!("created node '{}' (pid {pid})\n", config.name),
                None => format!("created node '{}'\n", config.name),
            };
            write_out(line.as_bytes());
        }
        Command::Destroy(_) | Command::Restart(_) => {
            let verb = if matches!(command, Command::Destroy(_)) {
                "destroyed"
            } else {
                "restarted"
            };
            let names: Vec<String> = serde_json::from_value(result).unwrap_or_default();
            let line = match names.as_slice() {
                [] => "there are no nodes\n".to_string(),
                [one] => format!("{verb} node '{one}'\n"),
                many => format!("{verb} {} nodes: {}\n", many.len(), many.join(", ")),
            };
            write_out(line.as_bytes());
        }
        Command::Stop => write_out(b"the supervisor is stopping\n"),
        Command::Tail { .. } | Command::Follow(_) => {
            let lines: Vec<OutputLine> = serde_json::from_value(result).unwrap_or_default();
            for line in lines {
                let text = format!("{}\n", line.line);
                if line.stream == "stderr" {
                    write_err(text.as_bytes());
                } else {
                    write_out(text.as_bytes());
                }
            }
        }
        Command::Eval(_) => {
            if let Some(output) = &response.output {
                write_out(output.as_bytes());
            }
            match result {
                Value::String(text) if text == "()" => {}
                Value::String(text) => write_out(format!("{text}\n").as_bytes()),
                other => write_out(format!("{other}\n").as_bytes()),
            }
        }
    }
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
