//! `!include` patterns: brace expansion, then shell wildcards (`*`, `?`, `[...]`) per path
//! component, results sorted per brace alternative (the order glob(3) with GLOB_BRACE gives).

use std::path::Path;

/// Expands `{a,b}` alternatives (nested allowed), left to right.
pub fn expand_braces(pattern: &str) -> Vec<String> {
    let bytes = pattern.as_bytes();
    let Some(open) = bytes.iter().position(|&b| b == b'{') else {
        return vec![pattern.to_owned()];
    };
    let mut depth = 0;
    let mut commas = Vec::new();
    let mut close = None;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            b',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![pattern.to_owned()];
    };
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let alt = &pattern[w[0] + 1..w[1]];
        out.extend(expand_braces(&format!("{head}{alt}{tail}")));
    }
    out
}

/// fnmatch without flags except that a leading `.` must be matched explicitly.
pub fn wildcard_match(pat: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pat.first() != Some(&b'.') {
        return false;
    }
    matches(pat, name)
}

fn matches(pat: &[u8], name: &[u8]) -> bool {
    match pat.first() {
        None => name.is_empty(),
        Some(b'*') => (0..=name.len()).any(|i| matches(&pat[1..], &name[i..])),
        Some(b'?') => !name.is_empty() && matches(&pat[1..], &name[1..]),
        Some(b'[') => {
            let Some(c) = name.first() else { return false };
            match class(&pat[1..], *c) {
                Some((ok, len)) => ok && matches(&pat[1 + len..], &name[1..]),
                None => name.first() == Some(&b'[') && matches(&pat[1..], &name[1..]),
            }
        }
        Some(b'\\') if pat.len() > 1 => {
            name.first() == Some(&pat[1]) && matches(&pat[2..], &name[1..])
        }
        Some(p) => name.first() == Some(p) && matches(&pat[1..], &name[1..]),
    }
}

/// A `[...]` class after the `[`: (matched, bytes consumed including `]`).
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = matches!(pat.first(), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    while i < pat.len() {
        if pat[i] == b']' && !first {
            return Some((found != negate, i + 1));
        }
        first = false;
        if i + 2 < pat.len() && pat[i + 1] == b'-' && pat[i + 2] != b']' {
            found |= pat[i] <= c && c <= pat[i + 2];
            i += 3;
        } else {
            found |= pat[i] == c;
            i += 1;
        }
    }
    None
}

fn has_wildcard(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// All existing paths matching `pattern` (no braces), sorted.
fn glob_one(pattern: &str) -> Vec<String> {
    let absolute = pattern.starts_with('/');
    let mut current: Vec<String> = vec![if absolute {
        "/".to_owned()
    } else {
        String::new()
    }];
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    for (idx, part) in parts.iter().enumerate() {
        let last = idx + 1 == parts.len();
        let mut next = Vec::new();
        for base in &current {
            let join = |name: &str| {
                if base.is_empty() || base.ends_with('/') {
                    format!("{base}{name}")
                } else {
                    format!("{base}/{name}")
                }
            };
            if !has_wildcard(part) {
                let unescaped = part.replace('\\', "");
                let p = join(&unescaped);
                let exists = if last {
                    Path::new(&p).symlink_metadata().is_ok()
                } else {
                    Path::new(&p).is_dir()
                };
                if exists {
                    next.push(p);
                }
                continue;
            }
            let dir = if base.is_empty() { "." } else { base.as_str() };
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| wildcard_match(part.as_bytes(), n.as_bytes()))
                .collect();
            names.sort();
            for n in names {
                let p = join(&n);
                if last || Path::new(&p).is_dir() {
                    next.push(p);
                }
            }
        }
        current = next;
    }
    if parts.is_empty() {
        return Vec::new();
    }
    current.sort();
    current
}

/// Expands an include pattern into the existing paths, in include order.
pub fn glob(pattern: &str) -> Vec<String> {
    expand_braces(pattern)
        .iter()
        .flat_map(|p| glob_one(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces() {
        assert_eq!(expand_braces("a{b,c}d"), vec!["abd", "acd"]);
        assert_eq!(expand_braces("{x,y{1,2}}"), vec!["x", "y1", "y2"]);
        assert_eq!(expand_braces("a{b"), vec!["a{b"]);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.conf", b"10-auth.conf"));
        assert!(!wildcard_match(b"*.conf", b".hidden.conf"));
        assert!(wildcard_match(b"1[0-5]-?.conf", b"12-x.conf"));
        assert!(!wildcard_match(b"1[!0-5]-?.conf", b"12-x.conf"));
    }

    #[test]
    fn globs_sorted_per_alternative() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["c/05-x.conf", "c/10-x.conf", "c/20-x.conf"] {
            let p = dir.path().join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let base = dir.path().to_str().unwrap();
        let got = glob(&format!("{base}/c/*.conf"));
        assert_eq!(got.len(), 3);
        assert!(got[0].ends_with("05-x.conf"));
        let got = glob(&format!("{base}/{{c/10-x.conf,c/05-x.conf}}"));
        assert!(got[0].ends_with("10-x.conf") && got[1].ends_with("05-x.conf"));
        assert!(glob(&format!("{base}/nomatch/*.conf")).is_empty());
    }
}
