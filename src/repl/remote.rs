//! `repl --attach`: the REPL's requests answered by a running supervisor over its
//! control socket (`control::Client`), or on another host through ssh
//! (`control::ssh::SshClient`), instead of by a supervisor in this process.
//!
//! Inputs run as `eval` requests in the remote engine (with its limits); what they
//! print comes back with the answer and is shown before the value. Leaving the REPL
//! leaves the supervisor running: `terminate()` typed at the prompt stops it.

use std::path::Path;

use super::evaluator::{Evaluator, Names, Reply, Unanswered};
use crate::config::Status;
use crate::config::reload::ReloadReport;
use crate::control::{ClientError, Command, Connection};
use crate::script::ScriptError;

pub struct Remote {
    client: Box<dyn Connection>,
}

impl Remote {
    pub fn new(client: Box<dyn Connection>) -> Remote {
        Remote { client }
    }

    fn unanswered(error: ClientError) -> Unanswered {
        match error {
            ClientError::Connect { .. } | ClientError::Lost { .. } => Unanswered::Stopped,
            // The host, not the supervisor, is out of reach: it may come back.
            other => Unanswered::Failed(other.to_string()),
        }
    }
}

impl Evaluator for Remote {
    fn eval(&mut self, code: &str) -> Result<Reply, Unanswered> {
        let evaluation = self.client.eval(code).map_err(Remote::unanswered)?;
        if !evaluation.output.is_empty() {
            print!("{}", evaluation.output);
            if !evaluation.output.ends_with('\n') {
                println!();
            }
        }
        let result = match evaluation.value {
            Ok(value) if value == "()" => Ok(None),
            Ok(value) => Ok(Some(value)),
            Err(message) => Err(ScriptError {
                file: None,
                line: None,
                column: None,
                message,
            }),
        };
        Ok(Reply {
            result,
            stopping: false,
        })
    }

    fn load(&mut self, path: &Path) -> Result<Reply, Unanswered> {
        // The file is read here and runs there: paths in it are the supervisor's.
        match std::fs::read_to_string(path) {
            Ok(code) => self.eval(&code),
            Err(e) => Ok(Reply {
                result: Err(ScriptError {
                    file: None,
                    line: None,
                    column: None,
                    message: format!(
                        "cannot read script '{}': {}",
                        path.display(),
                        crate::process::os_error(&e)
                    ),
                }),
                stopping: false,
            }),
        }
    }

    fn status(&mut self) -> Result<Status, Unanswered> {
        let response = self
            .client
            .call(Command::Status {
                node: None,
                usage: true,
            })
            .map_err(Remote::unanswered)?;
        match (response.ok, response.result) {
            (true, Some(result)) => serde_json::from_value(result)
                .map_err(|e| Unanswered::Failed(format!("an invalid status: {e}"))),
            _ => Err(Unanswered::Failed(
                response.error.unwrap_or_else(|| "no status".into()),
            )),
        }
    }

    fn reload(&mut self, dry_run: bool) -> Result<Result<ReloadReport, String>, Unanswered> {
        let response = self
            .client
            .call(Command::Reload { dry_run })
            .map_err(Remote::unanswered)?;
        match (response.ok, response.result) {
            (true, Some(result)) => serde_json::from_value(result)
                .map(Ok)
                .map_err(|e| Unanswered::Failed(format!("an invalid plan: {e}"))),
            _ => Ok(Err(response
                .error
                .unwrap_or_else(|| "the supervisor refused".into()))),
        }
    }

    fn names(&mut self, _path: &[String]) -> Result<Names, Unanswered> {
        // Only the node names are known over the socket; the rest completes from the
        // API's names alone.
        let nodes = self.status()?.nodes.into_keys().collect();
        Ok(Names {
            names: Vec::new(),
            nodes,
            fields: None,
        })
    }

    fn quit(&mut self) -> Result<(), Unanswered> {
        Ok(())
    }
}
