//! Phase 1b: files → a raw tree of statements with `file:line` positions.
//!
//! Reads the main file, expands `!include`/`!include_try` in place (relative patterns are
//! relative to the including file's directory; the included text continues the current section,
//! so a section may even open in one file and close in another), and nests the statements by
//! their braces. Every syntax error is collected; parsing goes on after one, so a caller sees
//! all of them, in file order (the first is the one doveconf would stop at).
//!
//! Bounded: include depth, bytes per file, total bytes, section depth ([`Limits`]).

use std::fmt;
use std::sync::Arc;

use super::error::ConfigError;
use super::glob::glob;
use super::grammar::{logical_lines, statement, Statement};

/// A place in a config file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// The path as doveconf prints it (relative stays relative).
    pub file: Arc<str>,
    pub line: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

impl Pos {
    /// The directory of the file, for relative `!include` and `<file` (empty = cwd).
    pub fn dir(&self) -> &str {
        match self.file.rfind('/') {
            Some(0) => "/",
            Some(i) => &self.file[..i],
            None => "",
        }
    }
}

/// Joins a path relative to a file's directory the way doveconf prints it.
pub fn relative_to(dir: &str, path: &str) -> String {
    if path.starts_with('/') || dir.is_empty() {
        path.to_owned()
    } else if dir.ends_with('/') {
        format!("{dir}{path}")
    } else {
        format!("{dir}/{path}")
    }
}

/// Resource bounds of one load.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_include_depth: usize,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub max_section_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_include_depth: 20,
            max_file_bytes: 16 << 20,
            max_total_bytes: 64 << 20,
            max_section_depth: 64,
        }
    }
}

/// A node of the raw tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `key = value` (value as written after `=`, quotes still on).
    Setting {
        pos: Pos,
        key: String,
        value: String,
    },
    /// `kind [name] { children }`.
    Section {
        pos: Pos,
        kind: String,
        name: Option<String>,
        quoted: bool,
        children: Vec<Node>,
    },
    /// A line that could not be parsed, kept in place so errors come out in reading order.
    Error { pos: Pos, message: String },
    /// A warning about a line (ambiguous `#`), in place for the same reason.
    Warning { pos: Pos, message: String },
}

impl Node {
    pub fn pos(&self) -> &Pos {
        match self {
            Node::Setting { pos, .. }
            | Node::Section { pos, .. }
            | Node::Error { pos, .. }
            | Node::Warning { pos, .. } => pos,
        }
    }
}

/// The result of phase 1.
#[derive(Debug, Default)]
pub struct RawTree {
    pub root: Vec<Node>,
    /// Errors outside any line: the main file cannot be read, a `}` is missing at the end.
    /// Line errors are [`Node::Error`]s in the tree.
    pub errors: Vec<ConfigError>,
    /// Every file that was read, in order (main file first).
    pub files: Vec<String>,
}

/// A section whose `}` has not been read yet.
struct OpenSection {
    /// None for the root.
    pos: Option<Pos>,
    kind: String,
    name: Option<String>,
    quoted: bool,
    children: Vec<Node>,
}

impl OpenSection {
    fn root() -> Self {
        OpenSection {
            pos: None,
            kind: String::new(),
            name: None,
            quoted: false,
            children: Vec::new(),
        }
    }
}

struct Builder {
    limits: Limits,
    total_bytes: u64,
    /// Open sections; index 0 is the root.
    stack: Vec<OpenSection>,
    /// Include chain for recursion detection (canonical paths).
    chain: Vec<std::path::PathBuf>,
    /// How many sections were opened beyond the depth limit (their braces still count).
    overflow: usize,
    out: RawTree,
    main: Arc<str>,
}

/// Reads `path` and everything it includes into a raw tree.
pub fn parse_file(path: &str, limits: Limits) -> RawTree {
    let mut b = Builder {
        limits,
        total_bytes: 0,
        stack: vec![OpenSection::root()],
        chain: Vec::new(),
        overflow: 0,
        out: RawTree::default(),
        main: Arc::from(path),
    };
    match read_limited(path, limits.max_file_bytes) {
        Ok(text) => {
            b.total_bytes = text.len() as u64;
            b.chain
                .push(std::fs::canonicalize(path).unwrap_or_else(|_| path.into()));
            b.out.files.push(path.to_owned());
            b.parse_text(Arc::from(path), &text, 0);
        }
        Err(e) => {
            b.out.errors.push(ConfigError::fatal(format!(
                "open({path}) failed: {}",
                io_reason(&e)
            )));
            return b.out;
        }
    }
    b.finish()
}

/// Parses config text that did not come from a file (tests, fuzzing); includes are relative
/// to the current directory.
pub fn parse_str(name: &str, text: &str, limits: Limits) -> RawTree {
    let mut b = Builder {
        limits,
        total_bytes: text.len() as u64,
        stack: vec![OpenSection::root()],
        chain: Vec::new(),
        overflow: 0,
        out: RawTree::default(),
        main: Arc::from(name),
    };
    b.parse_text(Arc::from(name), text, 0);
    b.finish()
}

/// The strerror-style text doveconf prints.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "No such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "Permission denied".to_owned(),
        _ => match e.raw_os_error() {
            Some(21) => "Is a directory".to_owned(),
            _ => e.to_string(),
        },
    }
}

fn read_limited(path: &str, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "file is larger than {max} bytes"
        )));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

impl Builder {
    fn error(&mut self, pos: &Pos, message: impl Into<String>) {
        self.push(Node::Error {
            pos: pos.clone(),
            message: message.into(),
        });
    }

    fn push(&mut self, node: Node) {
        if let Some(top) = self.stack.last_mut() {
            top.children.push(node);
        }
    }

    fn parse_text(&mut self, file: Arc<str>, text: &str, depth: usize) {
        for line in logical_lines(text) {
            let pos = Pos {
                file: file.clone(),
                line: line.number,
            };
            for message in line.warnings {
                self.push(Node::Warning {
                    pos: pos.clone(),
                    message,
                });
            }
            match statement(&line.text) {
                Err(msg) => self.error(&pos, msg),
                Ok(Statement::Setting { key, value }) => {
                    self.push(Node::Setting { pos, key, value })
                }
                Ok(Statement::Open { kind, name, quoted }) => {
                    if self.stack.len() > self.limits.max_section_depth {
                        if self.overflow == 0 {
                            self.error(
                                &pos,
                                format!(
                                    "Sections nested deeper than {}",
                                    self.limits.max_section_depth
                                ),
                            );
                        }
                        self.overflow += 1;
                    } else {
                        self.stack.push(OpenSection {
                            pos: Some(pos),
                            kind,
                            name,
                            quoted,
                            children: Vec::new(),
                        });
                    }
                }
                Ok(Statement::Close) => {
                    if self.overflow > 0 {
                        self.overflow -= 1;
                    } else if self.stack.len() > 1 {
                        self.close_top();
                    } else {
                        self.error(&pos, "Unexpected '}'");
                    }
                }
                Ok(Statement::Include { pattern, optional }) => {
                    self.include(&pos, &pattern, optional, depth)
                }
            }
        }
    }

    fn close_top(&mut self) {
        if let Some(OpenSection {
            pos: Some(pos),
            kind,
            name,
            quoted,
            children,
        }) = self.stack.pop()
        {
            self.push(Node::Section {
                pos,
                kind,
                name,
                quoted,
                children,
            });
        }
    }

    fn include(&mut self, pos: &Pos, pattern: &str, optional: bool, depth: usize) {
        // Checked before touching the file system (a zero limit disables includes: fuzzing).
        if depth + 1 > self.limits.max_include_depth {
            self.error(
                pos,
                format!(
                    "Include depth limit exceeded ({})",
                    self.limits.max_include_depth
                ),
            );
            return;
        }
        let full = relative_to(pos.dir(), pattern);
        let matches = if pattern.is_empty() {
            Vec::new()
        } else {
            glob(&full)
        };
        if matches.is_empty() {
            if !optional {
                self.error(pos, "No matches");
            }
            return;
        }
        for path in matches {
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone().into());
            if self.chain.contains(&canonical) {
                self.error(pos, format!("Recursive include file: {path}"));
                continue;
            }
            let text = match read_limited(&path, self.limits.max_file_bytes) {
                Ok(text) => text,
                Err(e) => {
                    if !optional {
                        self.error(
                            pos,
                            format!("Couldn't open include file {path}: {}", io_reason(&e)),
                        );
                    }
                    continue;
                }
            };
            self.total_bytes += text.len() as u64;
            if self.total_bytes > self.limits.max_total_bytes {
                self.error(
                    pos,
                    format!(
                        "Configuration is larger than {} bytes",
                        self.limits.max_total_bytes
                    ),
                );
                return;
            }
            self.out.files.push(path.clone());
            self.chain.push(canonical);
            self.parse_text(Arc::from(path.as_str()), &text, depth + 1);
            self.chain.pop();
        }
    }

    fn finish(mut self) -> RawTree {
        if self.stack.len() > 1 {
            let started = self.stack[1].pos.clone();
            if let Some(start) = started {
                self.out.errors.push(ConfigError::in_file(
                    &self.main,
                    format!("Missing '}}' (section started at {start})"),
                ));
            }
            while self.stack.len() > 1 {
                self.close_top();
            }
        }
        self.out.root = self.stack.pop().map(|t| t.children).unwrap_or_default();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_with_positions() {
        let t = parse_str(
            "t.conf",
            "a = 1\nservice imap {\n  b = 2\n}\n",
            Limits::default(),
        );
        assert!(t.errors.is_empty());
        assert_eq!(t.root.len(), 2);
        match &t.root[1] {
            Node::Section {
                pos,
                kind,
                name,
                children,
                ..
            } => {
                assert_eq!(pos.line, 2);
                assert_eq!(kind, "service");
                assert_eq!(name.as_deref(), Some("imap"));
                assert_eq!(children[0].pos().line, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_error_reported() {
        let t = parse_str(
            "t.conf",
            "}\na b c\nservice x {y\nservice imap {\n",
            Limits::default(),
        );
        let msgs: Vec<String> = t
            .root
            .iter()
            .filter_map(|n| match n {
                Node::Error { pos, message } => {
                    Some(ConfigError::at(pos, message.clone()).to_string())
                }
                _ => None,
            })
            .chain(t.errors.iter().map(|e| e.to_string()))
            .collect();
        assert_eq!(
            msgs,
            vec![
                "Error in configuration file t.conf line 1: Unexpected '}'",
                "Error in configuration file t.conf line 2: Expecting '{'",
                "Error in configuration file t.conf line 3: Garbage after '{'",
                "Error in configuration file t.conf: Missing '}' (section started at t.conf:4)",
            ]
        );
    }

    #[test]
    fn section_depth_is_bounded() {
        let text = "a {\n".repeat(1000) + &"}\n".repeat(1000);
        let t = parse_str("t.conf", &text, Limits::default());
        let mut errors = 0;
        let mut nodes = &t.root;
        while let Some(Node::Section { children, .. }) = nodes.first() {
            errors += children
                .iter()
                .filter(|n| matches!(n, Node::Error { .. }))
                .count();
            nodes = children;
        }
        assert_eq!(errors, 1);
        assert!(t.errors.is_empty());
    }
}
