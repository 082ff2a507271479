//! Phase 1a: the line grammar of dovecot.conf (config-syntax.md §2–§4.1).
//!
//! [`logical_lines`] turns a file into statements-to-be: comments stripped (quote-aware, with the
//! "ambiguous #" warning), `\` continuations joined, each tagged with the number of its last
//! physical line (doveconf reports errors there). [`statement`] is a nom parser for one logical
//! line. Nothing here knows setting names; that is phase 2 ([`super::apply`]).

use nom::branch::alt;
use nom::bytes::complete::{escaped_transform, is_not, tag, take_till, take_till1};
use nom::character::complete::{anychar, char, space0};
use nom::combinator::{all_consuming, map, opt, rest, value};
use nom::sequence::{delimited, preceded, terminated};
use nom::IResult;

/// One logical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based number of the last physical line it spans.
    pub number: u32,
    pub text: String,
    /// Warnings to print (without the `Configuration file FILE line N: ` prefix).
    pub warnings: Vec<String>,
}

const AMBIGUOUS_HASH: &str =
    "Ambiguous '#' character in line, treating it as comment. Add a space before it to remove this warning.";

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Strips a trailing comment: the first `#` outside `"..."`/`'...'` runs. Returns the kept text
/// and whether the `#` was glued to the text before it.
fn strip_comment(line: &str) -> (&str, bool) {
    let mut quote: Option<char> = None;
    let mut chars = line.char_indices();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some(q) => {
                if c == '\\' {
                    chars.next();
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' => {
                    let glued = line[..i].chars().next_back().is_some_and(|p| !is_blank(p));
                    return (&line[..i], glued);
                }
                _ => {}
            },
        }
    }
    (line, false)
}

/// Splits a file into logical lines.
pub fn logical_lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut pending: Option<(String, Vec<String>)> = None;
    for (idx, physical) in text.split('\n').enumerate() {
        let number = u32::try_from(idx + 1).unwrap_or(u32::MAX);
        let trimmed = physical.trim_matches(|c| is_blank(c) || c == '\r');
        if trimmed.is_empty() || trimmed.starts_with('#') {
            // A continuation into an empty or comment line discards the whole statement.
            pending = None;
            continue;
        }
        let (kept, glued) = strip_comment(trimmed);
        let kept = kept.trim_end_matches(is_blank);
        let (mut acc, mut warnings) = pending.take().unwrap_or_default();
        if glued {
            warnings.push(AMBIGUOUS_HASH.to_owned());
        }
        if !acc.is_empty() {
            acc.push(' ');
        }
        if let Some(body) = kept.strip_suffix('\\') {
            acc.push_str(body.trim_end_matches(is_blank));
            pending = Some((acc, warnings));
            continue;
        }
        acc.push_str(kept);
        if acc.is_empty() {
            continue;
        }
        out.push(Line {
            number,
            text: acc,
            warnings,
        });
    }
    out
}

/// One statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `key = value`; `value` is the text after `=`, trimmed, quotes still on.
    Setting { key: String, value: String },
    /// `type [name] {`.
    Open {
        kind: String,
        name: Option<String>,
        quoted: bool,
    },
    /// `}`.
    Close,
    /// `!include PATTERN` / `!include_try PATTERN`.
    Include { pattern: String, optional: bool },
}

/// A syntax error in one line (doveconf's text).
pub type SyntaxError = &'static str;

fn key_token(i: &str) -> IResult<&str, &str> {
    take_till(|c| is_blank(c) || c == '=')(i)
}

fn setting_rest(i: &str) -> IResult<&str, &str> {
    preceded(terminated(char('='), space0), rest)(i)
}

/// A quoted section name with backslash escapes.
fn quoted_name(i: &str) -> IResult<&str, String> {
    delimited(
        char('"'),
        map(
            opt(escaped_transform(is_not("\\\""), '\\', anychar)),
            Option::unwrap_or_default,
        ),
        char('"'),
    )(i)
}

fn bare_name(i: &str) -> IResult<&str, String> {
    map(take_till1(is_blank), str::to_owned)(i)
}

/// `{` followed by nothing.
fn open_brace(i: &str) -> Result<(), SyntaxError> {
    match tag::<_, _, nom::error::Error<&str>>("{")(i) {
        Ok((after, _)) if after.trim_start_matches(is_blank).is_empty() => Ok(()),
        Ok(_) => Err("Garbage after '{'"),
        Err(_) => Err("Expecting '{'"),
    }
}

/// Parses one logical line (already trimmed, non-empty).
pub fn statement(line: &str) -> Result<Statement, SyntaxError> {
    if let Ok((_, pattern)) = include(line) {
        return Ok(pattern);
    }
    if line == "}" {
        return Ok(Statement::Close);
    }
    let (after_key, key) = key_token(line).map_err(|_| "Expecting '{'")?;
    let after_key = after_key.trim_start_matches(is_blank);
    if let Ok((_, value)) = setting_rest(after_key) {
        if key.is_empty() {
            return Err("Missing key name ('=' at the beginning of line)");
        }
        return Ok(Statement::Setting {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    if after_key.starts_with('{') {
        open_brace(after_key)?;
        return Ok(Statement::Open {
            kind: key.to_owned(),
            name: None,
            quoted: false,
        });
    }
    let quoted = after_key.starts_with('"');
    let parsed: IResult<&str, String> = alt((quoted_name, bare_name))(after_key);
    let (after_name, name) = parsed.map_err(|_| "Expecting '{'")?;
    open_brace(after_name.trim_start_matches(is_blank))?;
    Ok(Statement::Open {
        kind: key.to_owned(),
        name: Some(name),
        quoted,
    })
}

fn include(i: &str) -> IResult<&str, Statement> {
    let (i, optional) = alt((
        value(true, tag("!include_try")),
        value(false, tag("!include")),
    ))(i)?;
    let (i, _) = alt((nom::character::complete::space1, nom::combinator::eof))(i)?;
    all_consuming(map(rest, move |p: &str| Statement::Include {
        pattern: p.trim().to_owned(),
        optional,
    }))(i)
}

/// A setting value after unquoting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub text: String,
    /// It was written in quotes (disables `$var` and `<file`).
    pub quoted: bool,
}

/// Removes matching outer quotes and resolves backslash escapes (config-syntax.md §4.1).
pub fn unquote(raw: &str) -> Value {
    let bytes = raw.as_bytes();
    if bytes.len() >= 2
        && (bytes[0] == b'"' || bytes[0] == b'\'')
        && bytes[bytes.len() - 1] == bytes[0]
    {
        let inner = &raw[1..raw.len() - 1];
        let mut text = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    text.push(next);
                }
            } else {
                text.push(c);
            }
        }
        Value { text, quoted: true }
    } else {
        Value {
            text: raw.to_owned(),
            quoted: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<(u32, String)> {
        logical_lines(src)
            .into_iter()
            .map(|l| (l.number, l.text))
            .collect()
    }

    #[test]
    fn comments_and_quotes() {
        assert_eq!(texts("# c\n  a = b # c\n"), vec![(2, "a = b".to_owned())]);
        assert_eq!(
            texts("a = \"x # y\"\n"),
            vec![(1, "a = \"x # y\"".to_owned())]
        );
        let l = logical_lines("a = x@y#z\n");
        assert_eq!(l[0].text, "a = x@y");
        assert_eq!(l[0].warnings.len(), 1);
        assert_eq!(
            texts("a = \"abc # def\n"),
            vec![(1, "a = \"abc # def".to_owned())]
        );
    }

    #[test]
    fn continuation() {
        assert_eq!(texts("a = b \\\n   c\n"), vec![(2, "a = b c".to_owned())]);
        assert_eq!(texts("a = b \\\n\nc = d\n"), vec![(3, "c = d".to_owned())]);
        assert_eq!(
            texts("a = b \\\n# x\nc = d\n"),
            vec![(3, "c = d".to_owned())]
        );
    }

    #[test]
    fn statements() {
        let set = |k: &str, v: &str| {
            Ok(Statement::Setting {
                key: k.into(),
                value: v.into(),
            })
        };
        assert_eq!(statement("a=b"), set("a", "b"));
        assert_eq!(statement("a =  b c"), set("a", "b c"));
        assert_eq!(statement("a ="), set("a", ""));
        assert_eq!(
            statement("= x"),
            Err("Missing key name ('=' at the beginning of line)")
        );
        assert_eq!(statement("}"), Ok(Statement::Close));
        assert_eq!(statement("} x"), Err("Expecting '{'"));
        assert_eq!(statement("a b c"), Err("Expecting '{'"));
        assert_eq!(statement("service imap {x"), Err("Garbage after '{'"));
        assert_eq!(
            statement("mailbox \"Sent \\\"M\" {"),
            Ok(Statement::Open {
                kind: "mailbox".into(),
                name: Some("Sent \"M".into()),
                quoted: true
            })
        );
        assert_eq!(
            statement("passdb {"),
            Ok(Statement::Open {
                kind: "passdb".into(),
                name: None,
                quoted: false
            })
        );
        assert_eq!(
            statement("!include_try a/*.conf"),
            Ok(Statement::Include {
                pattern: "a/*.conf".into(),
                optional: true
            })
        );
        assert_eq!(
            statement("!include"),
            Ok(Statement::Include {
                pattern: String::new(),
                optional: false
            })
        );
    }

    #[test]
    fn unquoting() {
        assert_eq!(unquote("\"a \\\"b\\\\\"").text, "a \"b\\");
        assert!(!unquote("\"abc").quoted);
        assert!(unquote("''").quoted);
    }
}
