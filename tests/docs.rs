//! The documentation, checked against the program: README.md and every page under docs/.
//!
//! How pages mark what is checked:
//!
//! - Every ```` ```rhai ```` block is compiled with the supervisor's own engine (its
//!   modules and limits) and must parse. ```` ```rhai no-check ```` opts a block out.
//! - ```` ```rhai file=NAME.rhai ```` also names the block: before a page's commands
//!   run, each such block is written to that file in a sandbox of the page's own.
//! - A ```` ```console ```` block whose first line is `$ rhai-supervisor ... run|exec ...`
//!   is run in that sandbox (the words after `$` are the arguments; no quoting), must
//!   exit 0, and must print the lines that follow. Any other console block must say
//!   ```` ```console no-check ````.
//!
//! How a listing is compared with what the command printed:
//!
//! - A line that is a log line (`12:00:00 [INFO] ...`, after an optional `[node] `) is
//!   expected on stderr; any other line on stdout.
//! - Lines are grouped by stream and by node (the `[node] ` prefix, or none for the
//!   supervisor's own lines). Each group must match line for line, in order; the order
//!   between groups is not checked, since nodes and streams run concurrently.
//! - In an expected line, a time of day (`12:00:00`) matches any time, the number after
//!   `pid ` matches any number, and `…` matches any text.
//!
//! Besides the blocks: every record field, hook and `Supervisor::` name has its place in
//! the script API page, every command and option of the command line (from clap) its
//! section in the command-line page, every control command its row in the protocol
//! page; and every relative link and anchor leads somewhere. So a new field, command
//! or option without documentation fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::CommandFactory;
use rhai_supervisor::script::records::Record;
use rhai_supervisor::script::{Context, Hook, Host, Limits, Role};

use crate::util::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fields of each record type, as the script API defines them (readable ones too).
fn record_fields() -> Vec<(&'static str, Vec<&'static str>)> {
    fn of<R: Record>() -> Vec<&'static str> {
        R::FIELDS.iter().chain(R::COMPUTED).copied().collect()
    }
    use rhai_supervisor::config::{ClusterEndpoint, NodeConfig, NodeStatus, Status};
    vec![
        ("NodeConfig", of::<NodeConfig>()),
        ("ClusterEndpoint", of::<ClusterEndpoint>()),
        ("NodeStatus", of::<NodeStatus>()),
        ("Status", of::<Status>()),
    ]
}

/// The supervisor's engine, in a process with no supervisor role (as `exec` has it).
fn plain_host() -> Host {
    Host::new(
        Context::new(Role::Plain).shared(),
        None,
        Limits::default(),
        Arc::new(AtomicBool::new(false)),
    )
}

/// A Markdown page: its text, its headings and its fenced blocks.
struct Page {
    path: PathBuf,
    lines: Vec<String>,
    /// (line index, level, text) of every heading outside code blocks.
    headings: Vec<(usize, usize, String)>,
    blocks: Vec<Block>,
}

/// A fenced block: ```` ```lang attr attr=value ````.
struct Block {
    /// The line of its opening fence, from 1.
    line: usize,
    lang: String,
    attrs: Vec<String>,
    text: String,
}

impl Block {
    fn flag(&self, name: &str) -> bool {
        self.attrs.iter().any(|a| a == name)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
    }
}

impl Page {
    fn read(relative: &str) -> Page {
        let path = root().join(relative);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Page::parse(path, &text)
    }

    fn parse(path: PathBuf, text: &str) -> Page {
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut headings = Vec::new();
        let mut blocks = Vec::new();
        let mut open: Option<(usize, usize, Vec<String>, Vec<String>)> = None;
        for (index, line) in lines.iter().enumerate() {
            let fence = line.trim_start().len() - line.trim_start().trim_start_matches('`').len();
            match &mut open {
                Some((start, width, info, body)) => {
                    if fence >= *width && line.trim().chars().all(|c| c == '`') {
                        let mut words = info.iter().cloned();
                        blocks.push(Block {
                            line: *start + 1,
                            lang: words.next().unwrap_or_default(),
                            attrs: words.collect(),
                            text: body.join("\n") + "\n",
                        });
                        open = None;
                    } else {
                        body.push(line.clone());
                    }
                }
                None if fence >= 3 => {
                    let info = line.trim_start()[fence..]
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    open = Some((index, fence, info, Vec::new()));
                }
                None => {
                    let level = line.len() - line.trim_start_matches('#').len();
                    if (1..=6).contains(&level) && line[level..].starts_with(' ') {
                        headings.push((index, level, line[level..].trim().to_string()));
                    }
                }
            }
        }
        assert!(
            open.is_none(),
            "{}: a code block is not closed",
            path.display()
        );
        Page {
            path,
            lines,
            headings,
            blocks,
        }
    }

    fn name(&self) -> String {
        self.path
            .strip_prefix(root())
            .unwrap_or(&self.path)
            .display()
            .to_string()
    }

    fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The text under the heading `title`, down to the next heading of its level or
    /// above (so it includes its subsections).
    fn section(&self, title: &str) -> Option<String> {
        let at = self.headings.iter().position(|(_, _, t)| t == title)?;
        let (start, level, _) = self.headings[at];
        let end = self.headings[at + 1..]
            .iter()
            .find(|(_, l, _)| *l <= level)
            .map_or(self.lines.len(), |(i, _, _)| *i);
        Some(self.lines[start..end].join("\n"))
    }

    /// GitHub's anchors for the headings: lowercase, punctuation dropped, spaces as
    /// dashes, `-1`, `-2`... after repeats.
    fn anchors(&self) -> Vec<String> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut anchors = Vec::new();
        for (_, _, title) in &self.headings {
            let slug: String = title
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect();
            let n = seen.entry(slug.clone()).or_insert(0);
            anchors.push(if *n == 0 {
                slug.clone()
            } else {
                format!("{slug}-{n}")
            });
            *n += 1;
        }
        anchors
    }
}

/// README.md and every Markdown page under docs/.
fn pages() -> Vec<Page> {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "md") {
                let relative = path.strip_prefix(root()).unwrap();
                found.push(relative.display().to_string());
            }
        }
    }
    let mut names = vec!["README.md".to_string()];
    walk(&root().join("docs"), &mut names);
    names.iter().map(|n| Page::read(n)).collect()
}

/// `-n` or `--lines` as an option, not as part of a longer word.
fn contains_option(text: &str, option: &str) -> bool {
    text.match_indices(option).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + option.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_')
    })
}

#[test]
fn every_rhai_block_compiles_with_the_supervisors_engine() {
    let host = plain_host();
    let mut failures = Vec::new();
    let mut compiled = 0;
    for page in pages() {
        for block in &page.blocks {
            let known = match block.lang.as_str() {
                "rhai" => block
                    .attrs
                    .iter()
                    .all(|a| a == "no-check" || a.starts_with("file=")),
                "console" => block.attrs.iter().all(|a| a == "no-check"),
                _ => true,
            };
            if !known {
                failures.push(format!(
                    "{}:{}: unknown marks {:?} (rhai: file=NAME, no-check; console: no-check)",
                    page.name(),
                    block.line,
                    block.attrs
                ));
            }
            if block.lang != "rhai" || block.flag("no-check") {
                continue;
            }
            compiled += 1;
            if let Err(e) = host.compile(&block.text) {
                let (line, column) = (e.position().line(), e.position().position());
                failures.push(format!(
                    "{}:{}: the block does not compile: line {line:?}, column {column:?} of the block: {}",
                    page.name(),
                    block.line,
                    e.err_type()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compiled >= 6, "only {compiled} rhai blocks found");
}

/// An expected line, as pieces to match.
#[derive(Debug)]
enum Piece {
    Text(String),
    /// One or more digits.
    Digits,
    /// Any text, `…` in the listing.
    Any,
}

fn pattern(expected: &str) -> Vec<Piece> {
    let chars: Vec<char> = expected.chars().collect();
    let mut pieces = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, pieces: &mut Vec<Piece>| {
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(text)));
        }
    };
    let digits_at = |i: usize, n: usize| {
        i + n <= chars.len() && chars[i..i + n].iter().all(char::is_ascii_digit)
    };
    let mut i = 0;
    while i < chars.len() {
        let time = digits_at(i, 2)
            && chars.get(i + 2) == Some(&':')
            && digits_at(i + 3, 2)
            && chars.get(i + 5) == Some(&':')
            && digits_at(i + 6, 2);
        if chars[i] == '…' {
            flush(&mut text, &mut pieces);
            pieces.push(Piece::Any);
            i += 1;
        } else if time {
            flush(&mut text, &mut pieces);
            for k in 0..3 {
                if k > 0 {
                    pieces.push(Piece::Text(":".into()));
                }
                pieces.push(Piece::Digits);
            }
            i += 8;
        } else if text.ends_with("pid ") && chars[i].is_ascii_digit() {
            flush(&mut text, &mut pieces);
            pieces.push(Piece::Digits);
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
        } else {
            text.push(chars[i]);
            i += 1;
        }
    }
    flush(&mut text, &mut pieces);
    pieces
}

fn matches(pieces: &[Piece], actual: &str) -> bool {
    match pieces.split_first() {
        None => actual.is_empty(),
        Some((Piece::Text(t), rest)) => actual
            .strip_prefix(t.as_str())
            .is_some_and(|a| matches(rest, a)),
        Some((Piece::Digits, rest)) => {
            let n = actual.len()
                - actual
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .len();
            (1..=n).any(|k| matches(rest, &actual[k..]))
        }
        Some((Piece::Any, rest)) => actual
            .char_indices()
            .map(|(i, _)| i)
            .chain([actual.len()])
            .any(|i| matches(rest, &actual[i..])),
    }
}

/// `[node] rest` → (node, rest); a line of the process itself has node "".
fn split_node(line: &str) -> (&str, &str) {
    if let Some(inner) = line.strip_prefix('[')
        && let Some((node, rest)) = inner.split_once("] ")
        && !node.is_empty()
        && !node.contains(char::is_whitespace)
    {
        return (node, rest);
    }
    ("", line)
}

/// `12:00:00 [INFO] ...`: the supervisor's log format.
fn is_log_line(text: &str) -> bool {
    let Some((time, rest)) = text.split_once(' ') else {
        return false;
    };
    let time_ok = time.len() == 8
        && time.char_indices().all(|(i, c)| {
            if i == 2 || i == 5 {
                c == ':'
            } else {
                c.is_ascii_digit()
            }
        });
    time_ok
        && ["[ERROR] ", "[WARN] ", "[INFO] ", "[DEBUG] ", "[TRACE] "]
            .iter()
            .any(|level| rest.starts_with(level))
}

type Groups<'a> = BTreeMap<(&'static str, &'a str), Vec<&'a str>>;

fn group<'a>(lines: impl Iterator<Item = (&'static str, &'a str)>) -> Groups<'a> {
    let mut groups: Groups = BTreeMap::new();
    for (stream, line) in lines {
        let (node, _) = split_node(line);
        groups.entry((stream, node)).or_default().push(line);
    }
    groups
}

/// Runs the console blocks of `page` that run the program, in a sandbox holding the
/// page's `file=` blocks; returns how many ran.
fn run_page(page: &Page) -> usize {
    let sandbox = Sandbox::new("docs");
    let mut files = BTreeMap::new();
    for block in page.blocks.iter().filter(|b| b.lang == "rhai") {
        if let Some(name) = block.value("file") {
            assert!(
                files.insert(name.to_string(), block.line).is_none(),
                "{}:{}: a second block for file {name}",
                page.name(),
                block.line
            );
            sandbox.write(name, &block.text);
        }
    }
    let mut ran = 0;
    for block in page.blocks.iter().filter(|b| b.lang == "console") {
        if block.flag("no-check") {
            continue;
        }
        let at = format!("{}:{}", page.name(), block.line);
        let mut lines = block.text.lines();
        let command = lines.next().unwrap_or("");
        let words: Vec<&str> = command
            .strip_prefix("$ ")
            .unwrap_or_else(|| panic!("{at}: a console block starts with '$ COMMAND'"))
            .split_whitespace()
            .collect();
        let expected: Vec<&str> = lines.collect();
        assert!(
            !expected.iter().any(|l| l.starts_with("$ ")),
            "{at}: one command per checked console block"
        );
        assert_eq!(
            words.first(),
            Some(&"rhai-supervisor"),
            "{at}: a checked console block runs rhai-supervisor (else mark it no-check)"
        );
        let subcommand = words[1..].iter().find(|w| !w.starts_with('-'));
        assert!(
            matches!(subcommand, Some(&"run") | Some(&"exec")),
            "{at}: only `run` and `exec` can be checked; mark it no-check"
        );
        assert!(
            !command[2..].contains(['\'', '"', '|', '>', '<', '&', ';', '$', '\\'].as_slice()),
            "{at}: no quoting or shell syntax in a checked command"
        );
        let mut process = sandbox.start_with(&words[1..], |c| {
            c.env_remove("RHAI_SUPERVISOR_SOCKET");
        });
        let code = process.expect_exit();
        let (stdout, stderr) = (process.stdout(), process.stderr());
        let shown = || format!("--- stdout:\n{stdout}--- stderr:\n{stderr}");
        assert_eq!(code, Some(0), "{at}: `{command}` failed\n{}", shown());
        let want = group(expected.iter().map(|line| {
            let (_, rest) = split_node(line);
            let stream = if is_log_line(rest) {
                "stderr"
            } else {
                "stdout"
            };
            (stream, *line)
        }));
        let got = group(
            stdout
                .lines()
                .map(|l| ("stdout", l))
                .chain(stderr.lines().map(|l| ("stderr", l))),
        );
        let keys = |g: &Groups| {
            g.keys()
                .map(|(s, n)| format!("{s} of '{n}'"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(&want),
            keys(&got),
            "{at}: the listing and the output have different sources\n{}",
            shown()
        );
        for (key, want_lines) in &want {
            let got_lines = &got[key];
            let same = want_lines.len() == got_lines.len()
                && want_lines
                    .iter()
                    .zip(got_lines)
                    .all(|(w, g)| matches(&pattern(w), g));
            assert!(
                same,
                "{at}: the {} lines of '{}' differ from the listing\n--- listed:\n{}\n--- printed:\n{}\n{}",
                key.0,
                key.1,
                want_lines.join("\n"),
                got_lines.join("\n"),
                shown()
            );
        }
        ran += 1;
    }
    ran
}

#[test]
fn the_readme_runs_as_shown() {
    assert!(run_page(&Page::read("README.md")) >= 1);
}

#[test]
fn the_guide_runs_as_shown() {
    assert!(run_page(&Page::read("docs/guide.md")) >= 4);
}

#[test]
fn the_reference_runs_as_shown() {
    let mut ran = 0;
    for page in pages() {
        let name = page.name();
        if name != "README.md" && name != "docs/guide.md" {
            ran += run_page(&page);
        }
    }
    assert!(ran >= 1);
}

#[test]
fn the_listing_matcher_takes_times_pids_and_ellipses_only() {
    let m = |expected: &str, actual: &str| matches(&pattern(expected), actual);
    assert!(m(
        "02:07:51 [INFO] node 'w1' started (pid 13700)",
        "23:59:01 [INFO] node 'w1' started (pid 4)"
    ));
    assert!(m(
        "listening on '…/x.sock'",
        "listening on '/tmp/a b/x.sock'"
    ));
    assert!(!m("restart 1", "restart 2"));
    assert!(!m("pid 12", "pid x"));
    assert!(!m("w1 is running", "w1 is running as pid 4"));
    assert!(is_log_line("02:07:51 [WARN] x"));
    assert!(!is_log_line("up as Supervisor::WORKER"));
    assert_eq!(split_node("[w1] hello"), ("w1", "hello"));
    assert_eq!(split_node("hello [w1] x"), ("", "hello [w1] x"));
}

#[test]
fn every_record_field_hook_and_module_name_is_in_the_script_api_page() {
    let page = Page::read("docs/reference/script-api.md");
    let mut missing = Vec::new();
    for (record, fields) in record_fields() {
        let Some(section) = page.section(&format!("`{record}`")) else {
            missing.push(format!("a section headed `{record}`"));
            continue;
        };
        // Each field is named in the first column of the section's table.
        let first_cells: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix('|')?.split('|').next())
            .collect();
        for field in fields {
            if !first_cells
                .iter()
                .any(|c| c.contains(&format!("`{field}`")))
            {
                missing.push(format!("{record}.{field}"));
            }
        }
    }
    let hooks = page.section("Hooks").unwrap_or_default();
    for hook in Hook::ALL {
        if !hooks.contains(&format!("`{}(", hook.name())) {
            missing.push(format!("the hook {}", hook.name()));
        }
    }
    let module = page.section("The `Supervisor` module").unwrap_or_default();
    for name in rhai_supervisor::script::api::SUPERVISOR_NAMES {
        // `Supervisor::create`, or a constant in a list: `Supervisor::NONE/LOGGER`.
        let qualified = ["Supervisor::", "/"].iter().any(|prefix| {
            let written = format!("{prefix}{name}");
            module.match_indices(&written).any(|(i, _)| {
                let after = module[i + written.len()..].chars().next();
                !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        });
        if !qualified {
            missing.push(format!("Supervisor::{name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/reference/script-api.md does not document: {}",
        missing.join(", ")
    );
}

#[test]
fn every_command_and_option_is_in_the_command_line_page() {
    let page = Page::read("docs/reference/command-line.md");
    let text = page.text();
    let mut missing = Vec::new();
    let cli = rhai_supervisor::cli::Cli::command();
    let options = |command: &clap::Command, within: &str, path: &str, missing: &mut Vec<String>| {
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            let mut names = Vec::new();
            if let Some(long) = arg.get_long() {
                names.push(format!("--{long}"));
            }
            if let Some(short) = arg.get_short() {
                names.push(format!("-{short}"));
            }
            for name in names {
                if !contains_option(within, &name) {
                    missing.push(format!("{name} of `{path}`"));
                }
            }
            if arg.is_positional() {
                let value = arg
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map_or_else(|| arg.get_id().as_str().to_uppercase(), |v| v.to_string());
                if !within.contains(&value) {
                    missing.push(format!("{value} of `{path}`"));
                }
            }
        }
    };
    options(&cli, &text, "rhai-supervisor", &mut missing);
    let mut stack: Vec<(String, &clap::Command)> = cli
        .get_subcommands()
        .map(|c| (c.get_name().to_string(), c))
        .collect();
    let mut sections = 0;
    while let Some((path, command)) = stack.pop() {
        if command.is_hide_set() {
            continue;
        }
        let Some(section) = page.section(&format!("`{path}`")) else {
            missing.push(format!("a section headed `{path}`"));
            continue;
        };
        sections += 1;
        options(command, &section, &path, &mut missing);
        for sub in command.get_subcommands() {
            stack.push((format!("{path} {}", sub.get_name()), sub));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/reference/command-line.md does not document: {}",
        missing.join(", ")
    );
    assert!(sections >= 11, "only {sections} commands found");
}

#[test]
fn every_control_command_is_in_the_protocol_page() {
    let page = Page::read("docs/reference/control.md");
    let commands = page.section("Commands").expect("a section 'Commands'");
    let missing: Vec<&&str> = rhai_supervisor::control::COMMANDS
        .iter()
        .filter(|c| !commands.contains(&format!("| `{c}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/reference/control.md has no row for: {missing:?}"
    );
}

#[test]
fn every_link_leads_somewhere() {
    let mut all = pages();
    for extra in ["BENCHMARKS.md", "fuzz/README.md"] {
        all.push(Page::read(extra));
    }
    let anchors: BTreeMap<PathBuf, Vec<String>> = all
        .iter()
        .map(|p| (std::fs::canonicalize(&p.path).unwrap(), p.anchors()))
        .collect();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &all {
        let mut in_code = false;
        for (index, line) in page.lines.iter().enumerate() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                continue;
            }
            // Inline code holds no links.
            let prose: String = line
                .split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 0)
                .map(|(_, s)| s)
                .collect::<Vec<_>>()
                .join(" ");
            for (at, _) in prose.match_indices("](") {
                let rest = &prose[at + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = &rest[..end];
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
                let path = if file.is_empty() {
                    page.path.clone()
                } else {
                    page.path.parent().unwrap().join(file)
                };
                let path = std::fs::canonicalize(&path).unwrap_or(path);
                let where_ = format!("{}:{}: {target}", page.name(), index + 1);
                if !path.exists() {
                    broken.push(format!("{where_}: no such file"));
                } else if !anchor.is_empty() {
                    match anchors.get(&path) {
                        Some(list) if list.iter().any(|a| a == anchor) => {}
                        Some(_) => broken.push(format!("{where_}: no such heading")),
                        None => broken.push(format!("{where_}: an anchor into a page not checked")),
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked >= 20, "only {checked} links found");
}
