//! The shape of the source: the layers point one way (each module of `src/` names,
//! with `crate::...`, only the modules below it, so the process backend knows nothing
//! of who uses it, the policy nothing of scripts, and so on up; the table is the one in
//! `src/lib.rs`), and every `unsafe` block says why it is sound (`// SAFETY:`).

use std::collections::BTreeSet;
use std::path::Path;

/// Each top-level module and the modules it may name.
const LAYERS: &[(&str, &[&str])] = &[
    ("config", &[]),
    ("feed", &[]),
    ("console", &["config"]),
    ("process", &["config"]),
    ("supervisor", &["process", "config"]),
    ("script", &["supervisor", "process", "config", "console"]),
    (
        "event_loop",
        &[
            "script",
            "supervisor",
            "process",
            "config",
            "console",
            "feed",
        ],
    ),
    (
        "control",
        &[
            "feed",
            "event_loop",
            "script",
            "supervisor",
            "process",
            "config",
            "console",
        ],
    ),
    (
        "metrics",
        &["event_loop", "script", "supervisor", "process", "config"],
    ),
    (
        "repl",
        &[
            "feed",
            "control",
            "event_loop",
            "script",
            "supervisor",
            "process",
            "config",
            "console",
        ],
    ),
    (
        "runtime",
        &[
            "metrics",
            "feed",
            "repl",
            "control",
            "event_loop",
            "script",
            "supervisor",
            "process",
            "config",
            "console",
        ],
    ),
    ("cli", &["config"]),
    ("ctl", &["cli", "control", "config", "process", "console"]),
    ("top", &["cli", "control", "config", "process"]),
    (
        "node",
        &["runtime", "script", "process", "config", "console"],
    ),
];

/// The top-level modules a piece of source names through `crate::`, outside comments.
fn named_modules(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c}`: the first name of each item (groups do not nest
                // at the top level in this code base).
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        names.insert(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        }
    }
    names
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_names_only_the_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for path in all {
        let relative = path.strip_prefix(&src).unwrap();
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| *name == module) else {
            panic!("src/{module} is not in the table of layers: add it here and in lib.rs");
        };
        checked += 1;
        let source = std::fs::read_to_string(&path).unwrap();
        for name in named_modules(&source) {
            if name != module && !allowed.contains(&name.as_str()) {
                wrong.push(format!("{} names crate::{name}", relative.display()));
            }
        }
    }
    assert!(checked > 30, "only {checked} files were looked at");
    assert!(
        wrong.is_empty(),
        "layers pointing up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scan_finds_what_it_should() {
    let names = named_modules(
        "use crate::config::X;\nuse crate::{process::a, supervisor};\n// crate::repl\nlet x = crate::script::f(); // crate::cli",
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(names, ["config", "process", "script", "supervisor"]);
}

fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    all.into_iter()
        .map(|path| {
            let name = path.strip_prefix(&src).unwrap().display().to_string();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// The `unsafe` blocks of `source` with no `// SAFETY:` comment on their line or in
/// the comment lines right above it.
fn unexplained_unsafe(source: &str) -> Vec<usize> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let opens_block = code
            .match_indices("unsafe")
            .any(|(at, _)| code[at + "unsafe".len()..].trim_start().starts_with('{'));
        if !opens_block || line.contains("SAFETY") {
            continue;
        }
        let explained = lines[..i]
            .iter()
            .rev()
            .map(|l| l.trim())
            .take_while(|l| l.starts_with("//"))
            .any(|l| l.contains("SAFETY"));
        if !explained {
            found.push(i + 1);
        }
    }
    found
}

#[test]
fn every_unsafe_block_says_why_it_is_sound() {
    let mut wrong = Vec::new();
    for (name, source) in sources() {
        for line in unexplained_unsafe(&source) {
            wrong.push(format!("src/{name}:{line}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "unsafe blocks without a SAFETY comment:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        unexplained_unsafe("let a = unsafe { f() };\n// SAFETY: g is sound\nunsafe { g() };"),
        [1]
    );
}
