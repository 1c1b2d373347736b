//! Reading what the user typed: when a statement is unfinished (so the next line
//! continues it), and what a `:command` line asks for.

use rhai::{Engine, LexError, ParseErrorType};

/// The expression depth up to which input is parsed to see whether it is finished.
const PARSE_DEPTH: usize = 256;

/// Decides whether input is complete by asking Rhai's parser. Runs on the front end's
/// thread with an engine of its own that only parses.
pub struct Completeness {
    parser: Engine,
}

impl Default for Completeness {
    fn default() -> Self {
        let mut parser = Engine::new_raw();
        // Deeper than the supervisor's engine allows, so that a deep statement is not
        // taken for a finished one (the supervisor's engine then reports the depth),
        // yet bounded, so that a pathological paste cannot exhaust the stack.
        parser.set_max_expr_depths(PARSE_DEPTH, PARSE_DEPTH);
        Completeness { parser }
    }
}

impl Completeness {
    /// True when `code` fails to parse only because it ends too early: an open brace,
    /// bracket or parenthesis, an open string, a trailing operator. Any other syntax
    /// error makes it complete, so that running it shows the error.
    pub fn is_incomplete(&self, code: &str) -> bool {
        let error = match self.parser.compile(code) {
            Ok(_) => return false,
            Err(error) => error,
        };
        let (line, column) = (error.position().line(), error.position().position());
        match error.err_type() {
            // The parser also reports a missing token in the middle (`1 }`, `let a = 1
            // let b = 2`): only an error past the last character means "more to come".
            ParseErrorType::UnexpectedEOF | ParseErrorType::MissingToken(..) => {
                past_the_end(code, line, column)
            }
            // Reported where the string starts. A backtick string may span lines; a
            // quoted one only goes on after a `\` at the end of the line.
            ParseErrorType::BadInput(LexError::UnterminatedString) => {
                match char_at(code, line, column) {
                    Some('`') => true,
                    Some('"') => code.rsplit('\n').next().is_some_and(|l| l.ends_with('\\')),
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// The character at `line`:`column` (1-based) of `code`.
fn char_at(code: &str, line: Option<usize>, column: Option<usize>) -> Option<char> {
    let text = code.split('\n').nth(line?.checked_sub(1)?)?;
    text.chars().nth(column?.checked_sub(1)?)
}

/// Whether a parse error at `line`:`column` (1-based, either unknown) lies after the
/// last character of `code`.
fn past_the_end(code: &str, line: Option<usize>, column: Option<usize>) -> bool {
    // The parser may place the end on a trailing blank line: those count as the end.
    let mut lines: Vec<&str> = code.split('\n').collect();
    while lines.len() > 1 && lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let last_line = lines.len();
    let last_width = lines.last().map_or(0, |l| l.trim_end().chars().count());
    let Some(line) = line else {
        return true;
    };
    match line.cmp(&last_line) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => column.is_none_or(|c| c > last_width),
    }
}

/// A `:command` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Status,
    Load(String),
    /// `:reload`, `:reload --dry-run`: read the command-line scripts again.
    Reload {
        dry_run: bool,
    },
    Quit,
    /// A command that needs an argument it did not get, or one that does not exist.
    Bad(String),
}

/// The commands and their short forms, for `:help` and completion.
pub const COMMANDS: &[(&str, &str)] = &[
    (":help", ":h"),
    (":status", ":s"),
    (":load", ":l"),
    (":reload", ":r"),
    (":quit", ":q"),
];

impl Command {
    /// Reads a line that starts with `:`; `None` for a line that does not.
    pub fn parse(line: &str) -> Option<Command> {
        let line = line.trim();
        let rest = line.strip_prefix(':')?;
        let (name, argument) = match rest.split_once(char::is_whitespace) {
            Some((name, argument)) => (name, argument.trim()),
            None => (rest, ""),
        };
        Some(match name {
            "help" | "h" | "?" => Command::Help,
            "status" | "s" => Command::Status,
            "quit" | "q" | "exit" => Command::Quit,
            "load" | "l" if argument.is_empty() => {
                Command::Bad(format!(":{name} needs a file name: :load FILE"))
            }
            "load" | "l" => Command::Load(unquote(argument).to_string()),
            "reload" | "r" => match argument {
                "" => Command::Reload { dry_run: false },
                "--dry-run" | "dry-run" | "-n" => Command::Reload { dry_run: true },
                other => Command::Bad(format!(":{name} takes --dry-run or nothing, not '{other}'")),
            },
            _ => Command::Bad(format!("unknown command ':{name}' (:help lists them)")),
        })
    }
}

/// `"a b.rhai"` → `a b.rhai`, for a file name given in quotes.
fn unquote(text: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = text.strip_prefix(quote).and_then(|t| t.strip_suffix(quote)) {
            return inner;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_input_continues() {
        let c = Completeness::default();
        for code in [
            "fn f(x) {",
            "fn f(x) {\n  x + 1",
            "let m = #{a: 1,",
            "let a = [1, 2,\n",
            "1 +",
            "let x =",
            "print(\"a\",",
            "Supervisor::create(#{name: \"w1\",\n  command: [\"sleep\",",
            "let s = `first line",
            "let s = `first line\n  second",
            "x = 1;\n  let s = `a",
            "if x > 1 {\n  print(1);\n} else {",
            "let s = \"abc\\",
        ] {
            assert!(c.is_incomplete(code), "{code:?} should continue");
        }
    }

    #[test]
    fn finished_or_wrong_input_runs() {
        let c = Completeness::default();
        for code in [
            "",
            "1 + 2",
            "let x = 1;",
            "fn f(x) { x + 1 }",
            "fn f(x) {\n  x + 1\n}\n",
            "1 }",
            "let a = 1 let b = 2",
            "let x = 1 +* 2;",
            "let s = \"abc\ndef\";",
            "Supervisor::status()",
            "// just a comment",
            "let s = `two\nlines`;",
            "let s = \"abc",
            "let s = \"abc\\\ndef",
            "let s = \"abc\\\ndef\";",
        ] {
            assert!(!c.is_incomplete(code), "{code:?} should run");
        }
    }

    #[test]
    fn commands() {
        assert_eq!(Command::parse("1 + 1"), None);
        assert_eq!(Command::parse(" :help "), Some(Command::Help));
        assert_eq!(Command::parse(":s"), Some(Command::Status));
        assert_eq!(Command::parse(":q"), Some(Command::Quit));
        assert_eq!(
            Command::parse(":load  my file.rhai"),
            Some(Command::Load("my file.rhai".into()))
        );
        assert_eq!(
            Command::parse(":l \"a b.rhai\""),
            Some(Command::Load("a b.rhai".into()))
        );
        assert!(matches!(Command::parse(":load"), Some(Command::Bad(m)) if m.contains("FILE")));
        assert_eq!(
            Command::parse(":reload"),
            Some(Command::Reload { dry_run: false })
        );
        assert_eq!(
            Command::parse(":r --dry-run"),
            Some(Command::Reload { dry_run: true })
        );
        assert!(
            matches!(Command::parse(":reload now"), Some(Command::Bad(m)) if m.contains("--dry-run"))
        );
        assert!(matches!(Command::parse(":frob"), Some(Command::Bad(m)) if m.contains("':frob'")));
    }
}
