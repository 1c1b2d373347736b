//! `env_file`: a node's environment from a file of `KEY=VALUE` lines, in the dotenv
//! syntax that Docker, Compose and the dotenv libraries share: `#` comments and blank
//! lines, an optional `export ` before the key, values bare, in single quotes (taken
//! as written, over several lines if need be) or in double quotes (with `\n`, `\t`,
//! `\r`, `\"`, `\\` and `\$` escapes, over several lines too). A bare value ends at
//! ` #` (a comment) and loses its trailing spaces.
//!
//! Values are not expanded: `$HOME` stays `$HOME`. The file is read by the supervisor,
//! which may run as another user than the node and with another environment, so an
//! expansion would give the supervisor's values, not the node's.
//!
//! Errors name the line (counted from 1) where the bad entry starts.

use std::path::Path;

/// Why a file could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvFileError {
    /// It cannot be read (missing, a directory, no permission).
    #[error("cannot read env_file '{file}': {why}")]
    Read { file: String, why: String },
    /// A line is not a `KEY=VALUE` entry.
    #[error("env_file '{file}' line {line}: {why}")]
    Line {
        file: String,
        line: usize,
        why: String,
    },
}

/// Reads `written` (as the node's configuration names it), found at `path`.
pub fn read(path: &Path, written: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let read_error = |why: String| EnvFileError::Read {
        file: written.to_string(),
        why,
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.raw_os_error() == Some(nix::libc::EISDIR) => {
            return Err(read_error("it is a directory".into()));
        }
        Err(e) => return Err(read_error(super::os_error(&e))),
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        EnvFileError::Line {
            file: written.to_string(),
            line,
            why: "it is not UTF-8 text".into(),
        }
    })?;
    parse(&text).map_err(|(line, why)| EnvFileError::Line {
        file: written.to_string(),
        line,
        why,
    })
}

/// The entries of `text`, in order (a later entry for a key wins when applied), or the
/// line and reason of the first bad one.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut entries = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        let number = at + 1;
        let line = lines[at].trim_start();
        at += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let Some((key, rest)) = line.split_once('=') else {
            return Err((
                number,
                format!("expected KEY=VALUE, found {:?}", lines[at - 1]),
            ));
        };
        let key = key.trim_end();
        check_key(key).map_err(|why| (number, why))?;
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(quote @ ('\'' | '"')) => {
                let (value, next) = quoted(&lines, at - 1, rest, quote)
                    .map_err(|why| (number, format!("{key}: {why}")))?;
                at = next;
                value
            }
            _ => bare(rest).map_err(|why| (number, format!("{key}: {why}")))?,
        };
        if value.contains('\0') {
            return Err((number, format!("{key}: the value contains a NUL byte")));
        }
        entries.push((key.to_string(), value));
    }
    Ok(entries)
}

fn check_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        Ok(())
    } else if key.is_empty() {
        Err("the key is empty".into())
    } else {
        Err(format!(
            "{key:?} is not a variable name (letters, digits, '_' and '.', not starting with a digit)"
        ))
    }
}

/// A bare value: up to a ` #` comment, without trailing spaces; no quotes inside.
fn bare(rest: &str) -> Result<String, String> {
    let value = match rest.find(" #").or_else(|| rest.find("\t#")) {
        Some(i) => &rest[..i],
        None => rest,
    };
    let value = value.trim_end();
    if value.contains(['"', '\'']) {
        return Err(format!(
            "unexpected quote in the bare value {value:?} (quote the whole value)"
        ));
    }
    Ok(value.to_string())
}

/// A quoted value that starts `rest` on line `index` of `lines`, perhaps running over
/// the lines after it; returns it and the index of the line after it.
fn quoted(
    lines: &[&str],
    index: usize,
    rest: &str,
    quote: char,
) -> Result<(String, usize), String> {
    let mut value = String::new();
    let mut line = index;
    let mut chars: Vec<char> = rest[1..].chars().collect();
    let mut i = 0;
    loop {
        if i == chars.len() {
            // The value goes on: the newline is part of it.
            line += 1;
            if line == lines.len() {
                return Err(format!("the {quote} quote is not closed"));
            }
            value.push('\n');
            chars = lines[line].chars().collect();
            i = 0;
            continue;
        }
        let c = chars[i];
        i += 1;
        if c == quote {
            break;
        }
        if c == '\\' && quote == '"' && i < chars.len() {
            let escaped = chars[i];
            i += 1;
            match escaped {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'r' => value.push('\r'),
                '"' | '\\' | '$' | '`' => value.push(escaped),
                other => {
                    value.push('\\');
                    value.push(other);
                }
            }
            continue;
        }
        value.push(c);
    }
    let after: String = chars[i..].iter().collect();
    let after = after.trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return Err(format!("unexpected {after:?} after the closing quote"));
    }
    Ok((value, line + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_form_of_entry() {
        let text = "\u{feff}# a comment\n\n  PLAIN=value\nexport EXPORTED = spaced out  # note\n\
            SINGLE='it is $HOME # not a comment \\n'\nDOUBLE=\"a\\tb\\n\\\"c\\\" \\$HOME\"\n\
            EMPTY=\nMULTI=\"one\ntwo\"\r\nAFTER='x' # fine\nHASH=a#b\nexport=1\nPLAIN=again\n";
        assert_eq!(
            ok(text),
            pairs(&[
                ("PLAIN", "value"),
                ("EXPORTED", "spaced out"),
                ("SINGLE", "it is $HOME # not a comment \\n"),
                ("DOUBLE", "a\tb\n\"c\" $HOME"),
                ("EMPTY", ""),
                ("MULTI", "one\ntwo"),
                ("AFTER", "x"),
                ("HASH", "a#b"),
                ("export", "1"),
                ("PLAIN", "again"),
            ])
        );
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line, words) in [
            (
                "A=1\nnot an entry\n",
                2,
                "expected KEY=VALUE, found \"not an entry\"",
            ),
            ("\n\n1A=x\n", 3, "\"1A\" is not a variable name"),
            ("A=1\nB=\"open\nstill\n", 2, "B: the \" quote is not closed"),
            (
                "C='x' y\n",
                1,
                "C: unexpected \"y\" after the closing quote",
            ),
            ("D=it's\n", 1, "D: unexpected quote in the bare value"),
            ("=3\n", 1, "the key is empty"),
        ] {
            let (at, why) = parse(text).unwrap_err();
            assert_eq!(at, line, "{text:?}: {why}");
            assert!(why.contains(words), "{text:?}: {why}");
        }
    }

    #[test]
    fn files_that_cannot_be_read() {
        let dir = std::env::temp_dir().join(format!("rs-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = read(&dir, "conf").unwrap_err().to_string();
        assert_eq!(err, "cannot read env_file 'conf': it is a directory");
        let err = read(&dir.join("missing"), "missing.env")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cannot read env_file 'missing.env': no such file or directory"
        );
        std::fs::write(dir.join("bad.env"), "A=1\nB\n").unwrap();
        let err = read(&dir.join("bad.env"), "bad.env")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "env_file 'bad.env' line 2: expected KEY=VALUE, found \"B\""
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
