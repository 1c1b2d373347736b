//! Text the REPL shows: values laid out to fit the screen, errors with a caret under
//! the place they name, the `:status` table, the `:help` page. Plain functions from
//! data to text, so both front ends (terminal and pipe) and any evaluator share them.

use std::fmt::Write;

use crate::config::Status;

/// How far each level of a broken-up value is indented.
const INDENT: usize = 4;

/// Lays out a value as rendered by `to_debug` (`Supervisor::Status(#{nodes: #{...}})`):
/// unchanged when it fits in `width` columns, otherwise each bracket that does not fit
/// puts its items on lines of their own. Text it cannot take apart (unbalanced
/// brackets) comes back unchanged.
pub fn pretty(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let Some(pieces) = parse(text) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len() * 2);
    let mut column = 0;
    lay_out(&pieces, 0, &mut column, width, 0, &mut out);
    out
}

#[derive(Debug)]
enum Piece {
    Text(String),
    Group(Group),
}

#[derive(Debug)]
struct Group {
    open: char,
    close: char,
    items: Vec<Vec<Piece>>,
}

/// A bracket being read: its brackets (none at the top level) and the items so far.
struct Level {
    brackets: Option<(char, char)>,
    items: Vec<Vec<Piece>>,
}

impl Level {
    fn new(brackets: Option<(char, char)>) -> Level {
        Level {
            brackets,
            items: vec![Vec::new()],
        }
    }

    fn push_char(&mut self, c: char) {
        if let Some(item) = self.items.last_mut() {
            match item.last_mut() {
                Some(Piece::Text(t)) => t.push(c),
                _ => item.push(Piece::Text(c.to_string())),
            }
        }
    }
}

/// Splits text into plain runs and bracketed groups of comma-separated items,
/// skipping over string literals.
fn parse(text: &str) -> Option<Vec<Piece>> {
    let mut levels = vec![Level::new(None)];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                levels.last_mut()?.push_char(c);
                let mut escaped = false;
                loop {
                    let c = chars.next()?;
                    levels.last_mut()?.push_char(c);
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
            }
            '(' | '[' | '{' => {
                let close = match c {
                    '(' => ')',
                    '[' => ']',
                    _ => '}',
                };
                levels.push(Level::new(Some((c, close))));
            }
            ')' | ']' | '}' => {
                let Level {
                    brackets: Some((open, close)),
                    mut items,
                } = levels.pop()?
                else {
                    return None;
                };
                if close != c {
                    return None;
                }
                if items.last().is_some_and(|item| item.is_empty()) {
                    items.pop();
                }
                let item = levels.last_mut()?.items.last_mut()?;
                item.push(Piece::Group(Group { open, close, items }));
            }
            ',' if levels.len() > 1 => {
                levels.last_mut()?.items.push(Vec::new());
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
            }
            _ => levels.last_mut()?.push_char(c),
        }
    }
    if levels.len() != 1 {
        return None;
    }
    levels.pop()?.items.pop()
}

fn flat(pieces: &[Piece], out: &mut String) {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Group(g) => {
                out.push(g.open);
                for (i, item) in g.items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    flat(item, out);
                }
                out.push(g.close);
            }
        }
    }
}

/// Lays out `pieces` from `column`; `trailing` columns (closing brackets, a comma)
/// follow them on the last line.
fn lay_out(
    pieces: &[Piece],
    indent: usize,
    column: &mut usize,
    width: usize,
    trailing: usize,
    out: &mut String,
) {
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Text(t) => {
                out.push_str(t);
                *column += t.chars().count();
            }
            Piece::Group(g) => {
                let mut rest = String::new();
                flat(&pieces[i + 1..], &mut rest);
                let after = rest.chars().count() + trailing;
                lay_out_group(g, indent, column, width, after, out);
            }
        }
    }
}

fn lay_out_group(
    g: &Group,
    indent: usize,
    column: &mut usize,
    width: usize,
    trailing: usize,
    out: &mut String,
) {
    let mut one_line = String::new();
    for (i, item) in g.items.iter().enumerate() {
        if i > 0 {
            one_line.push_str(", ");
        }
        flat(item, &mut one_line);
    }
    let flat_width = one_line.chars().count() + 2;
    if g.items.is_empty() || *column + flat_width + trailing <= width {
        out.push(g.open);
        out.push_str(&one_line);
        out.push(g.close);
        *column += flat_width;
        return;
    }
    // `(#{...})`, a record's parentheses around its map: break the map, not both.
    if let [item] = g.items.as_slice() {
        let hugs = match item.as_slice() {
            [Piece::Group(_)] => true,
            [Piece::Text(t), Piece::Group(_)] => t == "#",
            _ => false,
        };
        if hugs {
            out.push(g.open);
            *column += 1;
            lay_out(item, indent, column, width, trailing + 1, out);
            out.push(g.close);
            *column += 1;
            return;
        }
    }
    out.push(g.open);
    let inner = indent + INDENT;
    for (i, item) in g.items.iter().enumerate() {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', inner));
        *column = inner;
        let last = i + 1 == g.items.len();
        lay_out(item, inner, column, width, usize::from(!last), out);
        if !last {
            out.push(',');
        }
    }
    out.push('\n');
    out.extend(std::iter::repeat_n(' ', indent));
    out.push(g.close);
    *column = indent + 1;
}

/// The line of `source` that an error names, with a caret under its column:
///
/// ```text
///   2 |   let y = x +* 2;
///     |               ^
/// ```
///
/// `None` when `source` has no such line.
pub fn excerpt(source: &str, line: usize, column: Option<usize>) -> Option<String> {
    let text = source.split('\n').nth(line.checked_sub(1)?)?;
    let text = text.trim_end_matches('\r');
    let number = line.to_string();
    let gutter = " ".repeat(number.len());
    let mut out = format!("  {number} | {text}");
    if let Some(column) = column {
        // Under a tab, a tab, so that the caret lines up however tabs are shown.
        let padding: String = text
            .chars()
            .chain(std::iter::repeat(' '))
            .take(column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let _ = write!(out, "\n  {gutter} | {padding}^");
    }
    Some(out)
}

/// The `:status` table: `ctl status`'s table, or a word when there are no nodes.
pub fn status_table(status: &Status) -> String {
    if status.nodes.is_empty() {
        return "no nodes".into();
    }
    crate::control::show::status_table(status)
        .trim_end()
        .to_string()
}

/// The `:help` page.
/// A reload's plan, one node a line, then what it did (or, for a dry run, would do),
/// the creates the scripts got refused and what failed.
pub fn reload(report: &crate::config::reload::ReloadReport) -> String {
    let mut out = String::new();
    for line in &report.nodes {
        out.push_str(&line.to_string());
        out.push('\n');
    }
    for refused in &report.refused {
        out.push_str(&format!("warning: Supervisor::create refused: {refused}\n"));
    }
    for error in &report.errors {
        out.push_str(&format!("error: {error}\n"));
    }
    if report.dry_run {
        out.push_str(&format!(
            "dry run, nothing changed; the plan: {}",
            report.summary()
        ));
    } else {
        out.push_str(&format!("reloaded: {}", report.summary()));
    }
    out
}

pub const HELP: &str = "\
Type Rhai statements; they run in the supervisor, between its other work. A statement
that is not finished (an open brace, string or bracket, a trailing operator) goes on
at the `...>` prompt. Variables, constants and functions stay defined for later
inputs; defining a hook makes the supervisor call it from then on:
  fn node_status(node, pid) { ... }     a node process started
  fn stdout_hook(node, line) { ... }    a line of a node's output (false drops it)
  fn stderr_hook(node, line) { ... }
  fn zeek_done() { ... }                when the session ends
A value is echoed; a statement prints nothing.

Supervisor API:
  Supervisor::create(#{name: \"w1\", command: [\"sleep\", \"60\"]})   \"\" or why not
  Supervisor::create(Supervisor::NodeConfig(\"w1\"))                   a script node
  Supervisor::destroy(\"w1\"), Supervisor::destroy()    stop one node, or every node
  Supervisor::restart(\"w1\"), Supervisor::restart()
  Supervisor::status(\"w1\"), Supervisor::status()      a Supervisor::Status
  Supervisor::NodeConfig(...), Supervisor::ClusterEndpoint(#{role, host, p})
  Supervisor::NONE, LOGGER, MANAGER, PROXY, WORKER      cluster roles
  Supervisor::is_supervisor(), Supervisor::is_supervised()
  schedule(millis, || ...), terminate(), exit(code), getenv(name), print(x), eprint(x)

Commands:
  :status, :s        a table of the nodes: state, pid, restarts, uptime, last exit
  :load FILE, :l     run a script file here (its functions and hooks stay)
  :reload, :r        read the command-line scripts again and apply the difference;
                     what was typed here gives way to them (--dry-run: only the plan)
  :help, :h          this page
  :quit, :q          stop every node, run zeek_done() and leave

Keys (Emacs):
  Tab                complete Supervisor:: names, fields after a dot, node names
  Up, Down           history (kept across sessions); Ctrl-R searches it
  Ctrl-A, Ctrl-E     start, end of line; Alt-B, Alt-F a word back, forward
  Ctrl-K, Ctrl-U     delete to the end, to the start; Ctrl-Y puts it back
  Ctrl-C             clear the input; while a statement runs, stop it
  Ctrl-D             on an empty line: leave as :quit does; at `...>`: run the
                     unfinished statement as it stands (to see what is wrong)

Typed ahead or pasted, lines wait and run one by one, as if typed at the prompt.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ExitInfo, NodeConfig, NodeStatus};

    #[test]
    fn short_values_stay_on_one_line() {
        assert_eq!(pretty("[1, 2, 3]", 80), "[1, 2, 3]");
        assert_eq!(pretty("\"a, (b\"", 3), "\"a, (b\"");
    }

    #[test]
    fn long_values_break_at_the_brackets_that_do_not_fit() {
        let status = r#"Supervisor::Status(#{nodes: #{w1: Supervisor::NodeStatus(#{node: Supervisor::NodeConfig(#{name: "w1", command: ["sleep", "60"]}), pid: 42, state: "running", restarts: 0, uptime: 1.5})}})"#;
        let expected = r#"Supervisor::Status(#{
    nodes: #{
        w1: Supervisor::NodeStatus(#{
            node: Supervisor::NodeConfig(#{
                name: "w1",
                command: ["sleep", "60"]
            }),
            pid: 42,
            state: "running",
            restarts: 0,
            uptime: 1.5
        })
    }
})"#;
        assert_eq!(pretty(status, 80), expected);
        assert!(
            pretty(status, 100).contains(
                r#"node: Supervisor::NodeConfig(#{name: "w1", command: ["sleep", "60"]}),"#
            )
        );
    }

    #[test]
    fn closing_brackets_count_against_the_width() {
        let text = r#"[#{a: S(#{name: "w1", command: ["sh", "-c", "x"]}), b: 1}]"#;
        for width in 20..text.len() {
            let out = pretty(text, width);
            for line in out.lines() {
                // Strings are never split, so only lines without one must fit.
                if !line.contains('"') {
                    assert!(line.chars().count() <= width, "{width}: {out}");
                }
            }
        }
        assert_eq!(
            pretty(text, 50),
            "[#{\n    a: S(#{\n        name: \"w1\",\n        command: [\"sh\", \"-c\", \"x\"]\n    }),\n    b: 1\n}]"
        );
    }

    #[test]
    fn strings_with_brackets_and_commas_are_kept_whole() {
        let text = r#"["a, b", "(c", "d\")", "e]", "ffffffffffffffffffffffff"]"#;
        let out = pretty(text, 20);
        assert_eq!(
            out,
            "[\n    \"a, b\",\n    \"(c\",\n    \"d\\\")\",\n    \"e]\",\n    \"ffffffffffffffffffffffff\"\n]"
        );
    }

    #[test]
    fn unbalanced_text_is_left_alone() {
        let text = "a) b, c, d, e, f, g, h, i, j, k, l, m, n";
        assert_eq!(pretty(text, 10), text);
        let open = "(a, b, c, d, e, f, g, h, i, j, k, l, m, n";
        assert_eq!(pretty(open, 10), open);
    }

    #[test]
    fn excerpts_put_the_caret_under_the_column() {
        let source = "let a = 1;\n\tlet b = a +* 2;";
        assert_eq!(
            excerpt(source, 2, Some(13)).unwrap(),
            "  2 | \tlet b = a +* 2;\n    | \t           ^"
        );
        assert_eq!(excerpt(source, 1, None).unwrap(), "  1 | let a = 1;");
        assert_eq!(excerpt(source, 3, Some(1)), None);
        assert_eq!(excerpt(source, 0, Some(1)), None);
        // Past the end of the line (an unexpected end of input).
        assert_eq!(excerpt("1 +", 1, Some(4)).unwrap(), "  1 | 1 +\n    |    ^");
    }

    #[test]
    fn status_table_aligns_columns() {
        assert_eq!(status_table(&Status::default()), "no nodes");
        let mut status = Status::default();
        let mut w1 = NodeStatus::new(NodeConfig::named("w1"));
        w1.state = "running".into();
        w1.pid = Some(4242);
        w1.uptime = Some(75.0);
        let mut crashy = NodeStatus::new(NodeConfig::named("crashy"));
        crashy.state = "reviving".into();
        crashy.restarts = 12;
        crashy.exit = Some(ExitInfo::Code(3));
        status.nodes.insert("w1".into(), w1);
        status.nodes.insert("crashy".into(), crashy);
        assert_eq!(
            status_table(&status),
            "NAME    STATE     PID   RESTARTS  UPTIME  LAST EXIT\n\
             crashy  reviving  -     12        -       code 3\n\
             w1      running   4242  0         1m15s   -"
        );
    }
}
