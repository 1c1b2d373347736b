//! Tab completion: what is being completed at the cursor (a `Supervisor::` name, a
//! field after a dot, a node name in the string argument of `destroy`, `restart` or
//! `status`, a variable or function, a command), and the candidates for it. Reads
//! only the text; what the program defines comes from the evaluator (`Names`).

use super::evaluator::Names;
use super::input::COMMANDS;
use crate::script::Hook;
use crate::script::api::SUPERVISOR_NAMES;
use crate::script::records::all_field_names;

/// What the text before the cursor asks to complete. `start` is the byte offset where
/// the replaced text begins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    Nothing,
    /// A command name: `:st`.
    Command {
        start: usize,
        prefix: String,
    },
    /// A file name after `:load `.
    File,
    /// A function or constant of the `Supervisor` module: `Supervisor::st`.
    Supervisor {
        start: usize,
        prefix: String,
    },
    /// A node name inside the string argument of `Supervisor::destroy`, `restart` or
    /// `status`: `Supervisor::status("w`. `close` is whether to add the closing quote.
    NodeInString {
        start: usize,
        prefix: String,
        close: bool,
    },
    /// A signal name inside the second, string argument of `Supervisor::signal`:
    /// `Supervisor::signal("web", "H`.
    SignalInString {
        start: usize,
        prefix: String,
        close: bool,
    },
    /// A node name as the first argument, before any quote: `Supervisor::destroy(`.
    NodeArgument {
        start: usize,
    },
    /// What follows a dot. `path` is the variable and fields before it (`cfg.cluster.`
    /// gives `["cfg", "cluster"]`); empty when the value before the dot is not one.
    Field {
        start: usize,
        path: Vec<String>,
        prefix: String,
    },
    /// A variable, function, builtin or keyword.
    Name {
        start: usize,
        prefix: String,
    },
}

impl Want {
    /// Whether the candidates depend on the program and the nodes.
    pub fn needs_names(&self) -> bool {
        matches!(
            self,
            Want::NodeInString { .. }
                | Want::NodeArgument { .. }
                | Want::Field { .. }
                | Want::Name { .. }
        )
    }

    /// The path whose fields the evaluator should look up.
    pub fn path(&self) -> &[String] {
        match self {
            Want::Field { path, .. } => path,
            _ => &[],
        }
    }
}

/// A completion: what the list shows and what replaces the text from `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub display: String,
    pub replacement: String,
}

/// Functions whose first argument is a node name.
const NODE_FUNCTIONS: &[&str] = &["destroy", "restart", "status", "signal"];

/// Builtins beside the `Supervisor` module, and Rhai's own most used functions.
const BUILTINS: &[&str] = &[
    "print",
    "debug",
    "eprint",
    "terminate",
    "exit",
    "getenv",
    "schedule",
    "sd_notify",
    "type_of",
    "to_string",
    "to_debug",
];

const KEYWORDS: &[&str] = &[
    "let", "const", "fn", "if", "else", "while", "loop", "for", "in", "break", "continue",
    "return", "throw", "try", "catch", "switch", "true", "false",
];

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// What the cursor at byte offset `pos` of `line` asks to complete.
pub fn analyse(line: &str, pos: usize) -> Want {
    let Some(before) = line.get(..pos) else {
        return Want::Nothing;
    };
    let after = line.get(pos..).unwrap_or("");
    let trimmed = before.trim_start();
    if trimmed.starts_with(':') {
        return match trimmed.split_once(char::is_whitespace) {
            None => Want::Command {
                start: before.len() - trimmed.len(),
                prefix: trimmed.to_string(),
            },
            Some((":load" | ":l", _)) => Want::File,
            Some(_) => Want::Nothing,
        };
    }
    match open_literal(before) {
        Open::Code => {}
        Open::String(quote) => {
            let prefix = &before[quote + 1..];
            let call = before[..quote].trim_end();
            let close = !after.starts_with('"');
            return if prefix.contains('\\') {
                Want::Nothing
            } else if calls_node_function(call) {
                Want::NodeInString {
                    start: quote + 1,
                    prefix: prefix.to_string(),
                    close,
                }
            } else if calls_signal_with_a_node(call) {
                Want::SignalInString {
                    start: quote + 1,
                    prefix: prefix.to_ascii_uppercase(),
                    close,
                }
            } else {
                Want::Nothing
            };
        }
        Open::Other => return Want::Nothing,
    }
    let start = before
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_ident(*c))
        .last()
        .map_or(pos, |(i, _)| i);
    let prefix = &before[start..];
    let head = &before[..start];
    if prefix.starts_with(|c: char| c.is_ascii_digit()) {
        return Want::Nothing;
    }
    if let Some(namespace) = head.strip_suffix("::") {
        return if trailing_ident(namespace) == "Supervisor" {
            Want::Supervisor {
                start,
                prefix: prefix.to_string(),
            }
        } else {
            Want::Nothing
        };
    }
    if let Some(receiver) = head.strip_suffix('.') {
        return match receiver_path(receiver) {
            Some(path) => Want::Field {
                start,
                path,
                prefix: prefix.to_string(),
            },
            None => Want::Nothing,
        };
    }
    if prefix.is_empty() {
        return if calls_node_function(head.trim_end()) {
            Want::NodeArgument { start }
        } else {
            Want::Nothing
        };
    }
    Want::Name {
        start,
        prefix: prefix.to_string(),
    }
}

/// The candidates for `want`, sorted; `names` is what the evaluator said (empty when
/// it could not be asked).
pub fn candidates(want: &Want, names: &Names) -> Vec<Candidate> {
    let plain = |s: &str| Candidate {
        display: s.to_string(),
        replacement: s.to_string(),
    };
    let mut out: Vec<Candidate> = match want {
        Want::Nothing | Want::File => Vec::new(),
        Want::Command { prefix, .. } => COMMANDS
            .iter()
            .map(|(long, _)| *long)
            .filter(|c| c.starts_with(prefix.as_str()))
            .map(plain)
            .collect(),
        Want::Supervisor { prefix, .. } => SUPERVISOR_NAMES
            .iter()
            .filter(|n| n.starts_with(prefix.as_str()))
            .map(|n| {
                // Constants are in capitals; everything else is called.
                let constant = n.chars().all(|c| c.is_ascii_uppercase() || c == '_');
                Candidate {
                    display: n.to_string(),
                    replacement: if constant {
                        n.to_string()
                    } else {
                        format!("{n}(")
                    },
                }
            })
            .collect(),
        Want::NodeInString { prefix, close, .. } => names
            .nodes
            .iter()
            .filter(|n| n.starts_with(prefix.as_str()))
            .map(|n| Candidate {
                display: n.clone(),
                replacement: if *close { format!("{n}\"") } else { n.clone() },
            })
            .collect(),
        Want::SignalInString { prefix, close, .. } => signal_names()
            .into_iter()
            .filter(|n| n.starts_with(prefix.as_str()))
            .map(|n| Candidate {
                display: n.clone(),
                replacement: if *close { format!("{n}\"") } else { n },
            })
            .collect(),
        Want::NodeArgument { .. } => names
            .nodes
            .iter()
            .map(|n| Candidate {
                display: n.clone(),
                replacement: format!("{n:?}"),
            })
            .collect(),
        Want::Field { path, prefix, .. } => {
            let known = if path.is_empty() {
                None
            } else {
                names.fields.as_ref()
            };
            match known {
                Some(fields) => fields
                    .iter()
                    .filter(|f| f.starts_with(prefix.as_str()))
                    .map(|f| plain(f))
                    .collect(),
                None => all_field_names()
                    .into_iter()
                    .filter(|f| f.starts_with(prefix.as_str()))
                    .map(plain)
                    .collect(),
            }
        }
        Want::Name { prefix, .. } => {
            let mut all: Vec<Candidate> = names
                .names
                .iter()
                .map(String::as_str)
                .chain(BUILTINS.iter().copied())
                .chain(KEYWORDS.iter().copied())
                .chain(Hook::ALL.iter().map(|h| h.name()))
                .filter(|n| n.starts_with(prefix.as_str()))
                .map(plain)
                .collect();
            if "Supervisor::".starts_with(prefix.as_str()) {
                all.push(plain("Supervisor::"));
            }
            all
        }
    };
    out.sort_by(|a, b| a.display.cmp(&b.display));
    out.dedup_by(|a, b| a.display == b.display);
    out
}

/// Where the cursor is: in code, in an open string (starting at that byte), or
/// somewhere nothing is completed (a comment, a backtick string, a character).
enum Open {
    Code,
    String(usize),
    Other,
}

fn open_literal(text: &str) -> Open {
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' | '`' | '\'' => {
                let mut escaped = false;
                let mut closed = false;
                for (_, d) in chars.by_ref() {
                    match d {
                        '\\' if !escaped => escaped = true,
                        d if d == c && !escaped => {
                            closed = true;
                            break;
                        }
                        _ => escaped = false,
                    }
                }
                if !closed {
                    return if c == '"' {
                        Open::String(i)
                    } else {
                        Open::Other
                    };
                }
            }
            '/' if chars.peek().is_some_and(|(_, d)| *d == '/') => return Open::Other,
            '/' if chars.peek().is_some_and(|(_, d)| *d == '*') => {
                chars.next();
                let mut star = false;
                let mut closed = false;
                for (_, d) in chars.by_ref() {
                    if star && d == '/' {
                        closed = true;
                        break;
                    }
                    star = d == '*';
                }
                if !closed {
                    return Open::Other;
                }
            }
            _ => {}
        }
    }
    Open::Code
}

/// The identifier at the end of `text`.
fn trailing_ident(text: &str) -> &str {
    let start = text
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_ident(*c))
        .last()
        .map_or(text.len(), |(i, _)| i);
    &text[start..]
}

/// Whether `text` ends with `Supervisor::destroy(` (or `restart(`, `status(`).
/// `Supervisor::signal("web",`: the second argument of `signal` comes next.
fn calls_signal_with_a_node(text: &str) -> bool {
    let Some(head) = text.strip_suffix(',') else {
        return false;
    };
    let head = head.trim_end();
    let Some(inner) = head.strip_suffix('"') else {
        return false;
    };
    let Some(open) = inner.rfind('"') else {
        return false;
    };
    calls_node_function(inner[..open].trim_end())
        && inner[..open]
            .trim_end()
            .trim_end_matches('(')
            .ends_with("signal")
}

/// The signals `Supervisor::signal` and `stop_signal` take, by name without `SIG`.
fn signal_names() -> Vec<String> {
    nix::sys::signal::Signal::iterator()
        .map(|s| s.as_str().trim_start_matches("SIG").to_string())
        .collect()
}

fn calls_node_function(text: &str) -> bool {
    let Some(call) = text.strip_suffix('(') else {
        return false;
    };
    let call = call.trim_end();
    NODE_FUNCTIONS.iter().any(|f| {
        call.strip_suffix(f)
            .and_then(|head| head.strip_suffix("::"))
            .is_some_and(|head| trailing_ident(head) == "Supervisor")
    })
}

/// `cfg.cluster` → `["cfg", "cluster"]`: the variable and fields before a dot.
/// Empty when the value before the dot is something else (a call, an index), and
/// `None` when nothing is completed there (a number).
fn receiver_path(text: &str) -> Option<Vec<String>> {
    let mut path = Vec::new();
    let mut rest = text;
    loop {
        let ident = trailing_ident(rest);
        if ident.is_empty() {
            // `f().`, `a[0].`, `Supervisor::status().`: a value of unknown type.
            return Some(Vec::new());
        }
        if ident.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        path.push(ident.to_string());
        rest = &rest[..rest.len() - ident.len()];
        match rest.strip_suffix('.') {
            Some(head) => rest = head,
            None => break,
        }
    }
    if rest.ends_with("::") {
        // A module's constant (`Supervisor::WORKER.`): not a global of the program.
        return Some(Vec::new());
    }
    path.reverse();
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_end(line: &str) -> Want {
        analyse(line, line.len())
    }

    fn replacements(want: &Want, names: &Names) -> Vec<String> {
        candidates(want, names)
            .into_iter()
            .map(|c| c.replacement)
            .collect()
    }

    fn names() -> Names {
        Names {
            names: vec!["cfg".into(), "counter".into(), "node_status".into()],
            nodes: vec!["web".into(), "worker-1".into(), "worker-2".into()],
            fields: Some(vec!["name".into(), "directory".into()]),
        }
    }

    #[test]
    fn supervisor_functions_and_constants() {
        let want = at_end("let s = Supervisor::st");
        assert_eq!(
            want,
            Want::Supervisor {
                start: 20,
                prefix: "st".into()
            }
        );
        assert_eq!(replacements(&want, &Names::default()), ["status("]);
        let want = at_end("Supervisor::");
        let all = replacements(&want, &Names::default());
        assert!(all.contains(&"WORKER".to_string()), "{all:?}");
        assert!(all.contains(&"create(".to_string()), "{all:?}");
        assert_eq!(at_end("Cluster::no"), Want::Nothing);
    }

    #[test]
    fn node_names_in_string_arguments() {
        let want = at_end("Supervisor::destroy(\"wor");
        assert_eq!(
            want,
            Want::NodeInString {
                start: 21,
                prefix: "wor".into(),
                close: true
            }
        );
        assert_eq!(replacements(&want, &names()), ["worker-1\"", "worker-2\""]);
        let line = "Supervisor::status( \"w\")";
        let want = analyse(line, line.len() - 2);
        assert_eq!(
            replacements(&want, &names()),
            ["web", "worker-1", "worker-2"]
        );
        let want = at_end("x = Supervisor::restart(");
        assert_eq!(want, Want::NodeArgument { start: 24 });
        assert_eq!(
            replacements(&want, &names()),
            ["\"web\"", "\"worker-1\"", "\"worker-2\""]
        );
        // Other strings are not node names.
        assert_eq!(at_end("print(\"wor"), Want::Nothing);
        assert_eq!(at_end("Supervisor::create(\"w"), Want::Nothing);
    }

    #[test]
    fn fields_after_a_dot() {
        let want = at_end("cfg.dir");
        assert_eq!(
            want,
            Want::Field {
                start: 4,
                path: vec!["cfg".into()],
                prefix: "dir".into()
            }
        );
        assert_eq!(replacements(&want, &names()), ["directory"]);
        assert_eq!(want.path(), ["cfg".to_string()]);
        assert_eq!(
            at_end("x + cfg.cluster.m"),
            Want::Field {
                start: 16,
                path: vec!["cfg".into(), "cluster".into()],
                prefix: "m".into()
            }
        );
        // A value of unknown type: every record field.
        let want = at_end("Supervisor::status(\"w1\").nodes.w1.rest");
        assert!(matches!(&want, Want::Field { path, .. } if path.is_empty()));
        assert_eq!(
            replacements(&want, &names()),
            ["restart", "restart_window", "restarts"]
        );
        let want = at_end("Supervisor::WORKER.na");
        assert_eq!(replacements(&want, &Names::default()), ["name"]);
        assert_eq!(at_end("1.5"), Want::Nothing);
    }

    #[test]
    fn signal_names_in_the_second_argument_of_signal() {
        let want = at_end("Supervisor::signal(\"web\", \"h");
        assert_eq!(
            want,
            Want::SignalInString {
                start: 27,
                prefix: "H".into(),
                close: true
            }
        );
        assert_eq!(replacements(&want, &Names::default()), ["HUP\""]);
        let want = at_end("Supervisor::signal(\"web\", \"US");
        assert_eq!(replacements(&want, &Names::default()), ["USR1\"", "USR2\""]);
        assert_eq!(at_end("Supervisor::status(\"web\", \"H"), Want::Nothing);
        // the first argument is still a node
        assert!(matches!(
            at_end("Supervisor::signal(\"w"),
            Want::NodeInString { .. }
        ));
    }

    #[test]
    fn names_builtins_and_keywords() {
        let want = at_end("let y = cou");
        assert_eq!(replacements(&want, &names()), ["counter"]);
        let want = at_end("Sup");
        assert_eq!(replacements(&want, &names()), ["Supervisor::"]);
        let want = at_end("fn node_");
        assert_eq!(
            replacements(&want, &names()),
            ["node_exit", "node_ready", "node_status"]
        );
        let want = at_end("ter");
        assert_eq!(replacements(&want, &names()), ["terminate"]);
    }

    #[test]
    fn nothing_in_comments_and_other_strings() {
        assert_eq!(at_end("// Supervisor::st"), Want::Nothing);
        assert_eq!(at_end("let s = `Supervisor::st"), Want::Nothing);
        assert_eq!(at_end("/* cfg."), Want::Nothing);
        assert!(matches!(at_end("/* x */ cfg.n"), Want::Field { .. }));
        assert!(matches!(at_end("\"a\\\"b\" + cou"), Want::Name { .. }));
        assert_eq!(at_end("let x = 1 + "), Want::Nothing);
    }

    #[test]
    fn commands() {
        let want = at_end(":st");
        assert_eq!(replacements(&want, &Names::default()), [":status"]);
        assert_eq!(at_end(":load scr"), Want::File);
        assert_eq!(at_end(":status x"), Want::Nothing);
    }
}
