//! `ctl --ssh HOST...`: the same request to the supervisor of every host given, through
//! ssh (`control::ssh`), all at once, each bounded by `--timeout`; then one merged
//! answer. Tables gain a `HOST` column, other lines a `HOST: ` prefix, JSON one line per
//! host with `"host"`; the exit status is the worst of the hosts'. A host that cannot
//! be reached is reported (on stderr, or as a JSON line) and hides nothing else.
//!
//! A command for one node (`status NAME`, `restart NAME`, `destroy NAME`, `tail NAME`)
//! is for the host that runs it: the other hosts' "does not exist" is left out, unless
//! no host has the node.

use serde_json::{Map, Value};

use super::{
    EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, Piece, complain, exit_status, printed, write_err,
    write_out,
};
use crate::cli::CtlArgs;
use crate::config::Status;
use crate::control::show::status_table_by_host;
use crate::control::ssh::{self, Remote, SshError, Target};
use crate::control::{Command, Response, no_such_node};

/// One host's answer, or why it has none.
type Answer = (Target, Result<Response, SshError>);

/// Runs `command` on every host of `args.ssh`; returns the worst exit status.
pub(super) fn run(args: &CtlArgs, command: Command) -> i32 {
    let mut targets: Vec<Target> = Vec::new();
    for text in &args.ssh {
        match Target::parse(text) {
            Ok(target) if targets.contains(&target) => {}
            Ok(target) => targets.push(target),
            Err(error) => {
                complain(&error.to_string());
                return EXIT_USAGE;
            }
        }
    }
    let remote = match Remote::new(&args.remote_command, args.socket.as_deref()) {
        Ok(remote) => remote,
        Err(error) => {
            complain(&error.to_string());
            return EXIT_USAGE;
        }
    };
    let timeout = args.timeout.unwrap_or(ssh::DEFAULT_TIMEOUT);
    let answers: Vec<Answer> = std::thread::scope(|scope| {
        let asking: Vec<_> = targets
            .iter()
            .map(|target| {
                let (remote, command) = (&remote, command.clone());
                std::thread::Builder::new()
                    .name(format!("ssh {target}"))
                    .spawn_scoped(scope, move || ssh::call(remote, target, command, timeout))
            })
            .collect();
        asking
            .into_iter()
            .zip(&targets)
            .map(|(thread, target)| {
                let answer = match thread {
                    Ok(thread) => thread.join().unwrap_or_else(|_| {
                        Err(SshError::Spawn("the thread asking this host failed".into()))
                    }),
                    Err(e) => Err(SshError::Spawn(format!("cannot start a thread: {e}"))),
                };
                (target.clone(), answer)
            })
            .collect()
    });
    let answers = without_absent(&command, answers);
    if args.json {
        print_json(&answers);
    } else {
        print_text(&command, &answers);
    }
    answers
        .iter()
        .map(|(_, answer)| match answer {
            Ok(response) => exit_status(response),
            Err(_) => EXIT_UNREACHABLE,
        })
        .max()
        .unwrap_or(EXIT_OK)
}

/// The node a command is for, when it is for one.
fn node_of(command: &Command) -> Option<&str> {
    match command {
        Command::Status {
            node: Some(name), ..
        }
        | Command::Restart(crate::control::Target::Node(name))
        | Command::Destroy(crate::control::Target::Node(name))
        | Command::Tail { node: name, .. } => Some(name),
        _ => None,
    }
}

/// Leaves out the hosts that say a node does not exist, when another host has it (or
/// may have it: one that did not answer).
fn without_absent(command: &Command, answers: Vec<Answer>) -> Vec<Answer> {
    let Some(node) = node_of(command) else {
        return answers;
    };
    let missing = no_such_node(node);
    let absent = |answer: &Result<Response, SshError>| matches!(answer, Ok(r) if !r.ok && r.error.as_deref() == Some(missing.as_str()));
    if answers.iter().all(|(_, answer)| absent(answer)) {
        return answers;
    }
    answers
        .into_iter()
        .filter(|(_, answer)| !absent(answer))
        .collect()
}

/// One JSON object per line and host: the response with `"host"`, or for a host that
/// gave none, `"ok": false`, the reason, and `"unreachable": true`.
fn print_json(answers: &[Answer]) {
    for (target, answer) in answers {
        let mut object = match answer {
            Ok(response) => match serde_json::to_value(response) {
                Ok(Value::Object(object)) => object,
                _ => Map::new(),
            },
            Err(error) => {
                let mut object = Map::new();
                object.insert("id".into(), Value::Null);
                object.insert("ok".into(), false.into());
                object.insert("error".into(), error.to_string().into());
                object.insert("unreachable".into(), true.into());
                object
            }
        };
        object.insert("host".into(), target.as_str().into());
        let mut line = serde_json::to_vec(&Value::Object(object)).unwrap_or_default();
        line.push(b'\n');
        write_out(&line);
    }
}

/// For a person: one status table for all hosts, or each host's lines prefixed with
/// its name; the hosts in the order given, their errors on stderr.
fn print_text(command: &Command, answers: &[Answer]) {
    if let Command::Status { .. } = command {
        let mut tables = Vec::new();
        let mut complaints = Vec::new();
        for (target, answer) in answers {
            match answer {
                Ok(response) if response.ok => {
                    let result = response.result.clone().unwrap_or(Value::Null);
                    match serde_json::from_value::<Status>(result) {
                        Ok(status) => tables.push((target.to_string(), status)),
                        Err(e) => complaints.push(format!("{target}: cannot read the status: {e}")),
                    }
                }
                Ok(response) => complaints.push(format!(
                    "{target}: {}",
                    response
                        .error
                        .as_deref()
                        .unwrap_or("the supervisor refused")
                )),
                Err(error) => complaints.push(format!("{target}: {error}")),
            }
        }
        if !tables.is_empty() {
            write_out(status_table_by_host(&tables).as_bytes());
        }
        for complaint in complaints {
            complain(&complaint);
        }
        return;
    }
    for (target, answer) in answers {
        let pieces = match answer {
            Ok(response) => printed(command, response),
            Err(error) => vec![Piece::Complaint(error.to_string())],
        };
        for piece in pieces {
            match piece {
                Piece::Out(text) => write_out(prefixed(target, &text).as_bytes()),
                Piece::Err(text) => write_err(prefixed(target, &text).as_bytes()),
                Piece::Complaint(text) => complain(&format!("{target}: {text}")),
            }
        }
    }
}

/// Each line of `text` as `HOST: line`, every one ending in a newline.
fn prefixed(target: &Target, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    for line in text.lines() {
        out.push_str(target.as_str());
        out.push_str(": ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Target as Nodes;

    fn target(text: &str) -> Target {
        Target::parse(text).unwrap()
    }

    fn refusal(error: &str) -> Result<Response, SshError> {
        Ok(Response::error(1.into(), error))
    }

    #[test]
    fn hosts_without_the_node_are_left_out() {
        let restart = Command::Restart(Nodes::Node("w1".into()));
        let answers = vec![
            (target("a"), refusal(&no_such_node("w1"))),
            (target("b"), Ok(Response::ok(1.into(), vec!["w1"].into()))),
            (target("c"), refusal(&no_such_node("w1"))),
        ];
        let kept = without_absent(&restart, answers);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0.as_str(), "b");
    }

    #[test]
    fn a_node_no_host_has_is_reported_by_all() {
        let tail = Command::Tail {
            node: "w9".into(),
            lines: None,
        };
        let answers = vec![
            (target("a"), refusal(&no_such_node("w9"))),
            (target("b"), refusal(&no_such_node("w9"))),
        ];
        assert_eq!(without_absent(&tail, answers).len(), 2);
    }

    #[test]
    fn a_host_that_did_not_answer_may_have_the_node() {
        let status = Command::status(Some("w1".into()));
        let answers = vec![
            (target("a"), refusal(&no_such_node("w1"))),
            (target("b"), Err(SshError::Unreachable("no route".into()))),
        ];
        let kept = without_absent(&status, answers);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0.as_str(), "b");
    }

    #[test]
    fn commands_for_every_node_keep_every_answer() {
        let answers = vec![
            (target("a"), refusal("the supervisor is shutting down")),
            (target("b"), refusal(&no_such_node("x"))),
        ];
        assert_eq!(
            without_absent(&Command::Restart(Nodes::All), answers).len(),
            2
        );
    }

    #[test]
    fn lines_are_prefixed_with_their_host() {
        assert_eq!(
            prefixed(&target("zeek@b:22"), "one\ntwo"),
            "zeek@b:22: one\nzeek@b:22: two\n"
        );
        assert_eq!(prefixed(&target("b"), ""), "");
    }
}
