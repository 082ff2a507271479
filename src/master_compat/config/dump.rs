//! Printing settings the way `doveconf -n` / `-a` does (config-syntax.md §11.1).
//!
//! Keys are sorted in their flat form (so `service/auth-worker/...` comes before
//! `service/auth/...`, exactly like doveconf), then regrouped into nested `type name { }` blocks.
//! The global part comes first, then one block per filter, least specific first.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::apply::{Filter, ListInfo};
use super::table::{child_context, unescape_name, ListKind, Table};
use super::Loaded;

/// What to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `-n`: settings that differ from the defaults (everything set inside sections and filters).
    Changed,
    /// `-a`: every setting, defaults included.
    All,
}

/// One section level of a flat key: the type word and the element id (None for string maps).
type Header = (String, Option<String>);

/// Splits a flat key into its section headers and the final setting name.
pub fn split_key(key: &str) -> (Vec<Header>, String) {
    let table = Table::get();
    let segs: Vec<&str> = key.split('/').collect();
    let mut headers = Vec::new();
    let mut ctx = String::new();
    let mut i = 0;
    while i < segs.len() {
        match table.list(&ctx, segs[i]) {
            Some(ListKind::StrMap) if i + 1 < segs.len() => {
                headers.push((segs[i].to_owned(), None));
                return (headers, segs[i + 1..].join("/"));
            }
            Some(_) if i + 2 < segs.len() => {
                headers.push((segs[i].to_owned(), Some(segs[i + 1].to_owned())));
                ctx = child_context(&ctx, segs[i]);
                i += 2;
            }
            _ => break,
        }
    }
    (headers, segs[i..].join("/"))
}

/// Whether a value is a secret doveconf hides without `-P`.
fn is_secret(key: &str) -> bool {
    key.ends_with("_password")
        || key.ends_with("_key")
        || key.ends_with("_nonce")
        || key.starts_with("ssl_dh")
}

/// A value as printed: quoted when it holds `#` or has outer whitespace.
pub fn format_value(key: &str, value: &str, show_secrets: bool) -> String {
    if !show_secrets && !value.is_empty() && is_secret(key) {
        return "# hidden, use -P to show it".to_owned();
    }
    let needs_quotes = value.contains('#')
        || value.starts_with([' ', '\t', '\n'])
        || value.ends_with([' ', '\t', '\n']);
    if !needs_quotes {
        return value.to_owned();
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn header_line(
    word: &str,
    id: Option<&str>,
    list_key: &str,
    lists: &BTreeMap<String, ListInfo>,
) -> String {
    let Some(id) = id else {
        return format!("{word} {{");
    };
    let unnamed = lists.get(list_key).is_some_and(|l| l.unnamed.contains(id));
    let anonymous = Table::get().list(
        &lists
            .get(list_key)
            .map(|l| parent_ctx(&l.ctx))
            .unwrap_or_default(),
        word,
    ) == Some(ListKind::Anonymous);
    if unnamed || anonymous {
        return format!("{word} {{");
    }
    let name = unescape_name(id);
    if name.contains(' ') {
        format!(
            "{word} \"{}\" {{",
            name.replace('\\', "\\\\").replace('"', "\\\"")
        )
    } else {
        format!("{word} {name} {{")
    }
}

fn parent_ctx(ctx: &str) -> String {
    ctx.rsplit_once('/')
        .map(|(p, _)| p.to_owned())
        .unwrap_or_default()
}

/// Prints sorted flat entries as nested blocks at `indent` levels.
fn print_entries<'a>(
    out: &mut String,
    entries: impl Iterator<Item = (&'a str, &'a str)>,
    indent: usize,
    lists: &BTreeMap<String, ListInfo>,
    show_secrets: bool,
) {
    let mut open: Vec<Header> = Vec::new();
    let pad = |n: usize| "  ".repeat(n);
    for (key, value) in entries {
        let (headers, leaf) = split_key(key);
        let common = open
            .iter()
            .zip(&headers)
            .take_while(|(a, b)| a == b)
            .count();
        while open.len() > common {
            open.pop();
            let _ = writeln!(out, "{}}}", pad(indent + open.len()));
        }
        for h in &headers[common..] {
            let list_key: Vec<String> = open
                .iter()
                .flat_map(|(w, id)| std::iter::once(w.clone()).chain(id.clone()))
                .chain(std::iter::once(h.0.clone()))
                .collect();
            let line = header_line(&h.0, h.1.as_deref(), &list_key.join("/"), lists);
            let _ = writeln!(out, "{}{line}", pad(indent + open.len()));
            open.push(h.clone());
        }
        let _ = writeln!(
            out,
            "{}{leaf} = {}",
            pad(indent + open.len()),
            format_value(&leaf, value, show_secrets)
        );
    }
    while !open.is_empty() {
        open.pop();
        let _ = writeln!(out, "{}}}", pad(indent + open.len()));
    }
}

/// Specificity order of filters (least specific first; ties keep config order).
fn filter_rank(f: &Filter) -> (bool, i16, i16, bool) {
    (
        f.local_name.is_some(),
        f.local.as_ref().map_or(-1, |n| i16::from(n.bits)),
        f.remote.as_ref().map_or(-1, |n| i16::from(n.bits)),
        f.protocol.is_some(),
    )
}

fn filter_headers(f: &Filter) -> Vec<String> {
    let mut h = Vec::new();
    if let Some(n) = &f.local {
        h.push(format!("local {n} {{"));
    }
    if let Some(n) = &f.local_name {
        h.push(format!("local_name {n} {{"));
    }
    if let Some(n) = &f.remote {
        h.push(format!("remote {n} {{"));
    }
    if let Some(p) = &f.protocol {
        h.push(format!("protocol {p} {{"));
    }
    h
}

/// Renders the configuration text (no banner).
pub fn dump(loaded: &Loaded, scope: Scope, show_secrets: bool) -> String {
    let mut out = String::new();
    let global = &loaded.store.filters[0];
    // Elements that failed their check lose their "was set" marks in doveconf: only values that
    // differ from the defaults show.
    let failed = |k: &str| loaded.hidden.iter().any(|h| k.starts_with(h.as_str()));
    match scope {
        Scope::All => {
            let entries = loaded.merged.iter().filter(|(k, v)| {
                // Foreman-only settings appear only when set.
                !is_foreman_default(k, v, global)
            });
            print_entries(
                &mut out,
                entries.map(|(k, v)| (k.as_str(), v.as_str())),
                0,
                &loaded.merged_lists,
                show_secrets,
            );
        }
        Scope::Changed => {
            let entries = global.values.iter().filter(|(k, a)| {
                let default = if failed(k) {
                    element_default(k)
                } else {
                    loaded.defaults.get(k.as_str()).cloned()
                };
                (k.contains('/') && !failed(k)) || default.as_deref() != Some(a.value.as_str())
            });
            print_entries(
                &mut out,
                entries.map(|(k, a)| (k.as_str(), a.value.as_str())),
                0,
                &loaded.merged_lists,
                show_secrets,
            );
        }
    }
    let mut order: Vec<usize> = (1..loaded.store.filters.len()).collect();
    order.sort_by_key(|&i| filter_rank(&loaded.store.filters[i].filter));
    for i in order {
        let block = &loaded.store.filters[i];
        if block.values.is_empty() {
            continue;
        }
        let headers = filter_headers(&block.filter);
        for (depth, h) in headers.iter().enumerate() {
            let _ = writeln!(out, "{}{h}", "  ".repeat(depth));
        }
        print_entries(
            &mut out,
            block
                .values
                .iter()
                .map(|(k, a)| (k.as_str(), a.value.as_str())),
            headers.len(),
            &block.lists,
            show_secrets,
        );
        for depth in (0..headers.len()).rev() {
            let _ = writeln!(out, "{}}}", "  ".repeat(depth));
        }
    }
    out
}

/// The table default of a list element's field.
fn element_default(key: &str) -> Option<String> {
    let (headers, leaf) = split_key(key);
    let mut ctx = String::new();
    for (w, _) in &headers {
        ctx = child_context(&ctx, w);
    }
    Table::get().setting(&ctx, &leaf).map(|s| s.default.clone())
}

fn is_foreman_default(key: &str, _value: &str, global: &super::apply::FilterBlock) -> bool {
    let (headers, leaf) = split_key(key);
    let mut ctx = String::new();
    for (w, _) in &headers {
        ctx = child_context(&ctx, w);
    }
    Table::get()
        .setting(&ctx, &leaf)
        .is_some_and(|s| s.foreman_only)
        && !global.values.contains_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keys() {
        let (h, leaf) = split_key("service/imap/unix_listener/login\\simap/mode");
        assert_eq!(h.len(), 2);
        assert_eq!(
            h[1],
            ("unix_listener".to_owned(), Some("login\\simap".to_owned()))
        );
        assert_eq!(leaf, "mode");
        let (h, leaf) = split_key("plugin/quota_rule");
        assert_eq!((h.len(), leaf.as_str()), (1, "quota_rule"));
        assert_eq!(split_key("base_dir").0.len(), 0);
    }

    #[test]
    fn values_quote_like_doveconf() {
        assert_eq!(format_value("x", " quota", false), "\" quota\"");
        assert_eq!(format_value("x", "x#y", false), "\"x#y\"");
        assert_eq!(format_value("x", "a\"b", false), "a\"b");
        assert_eq!(
            format_value("ssl_key", "</k", false),
            "# hidden, use -P to show it"
        );
        assert_eq!(format_value("ssl_key", "", false), "");
        assert_eq!(format_value("ssl_key", "</k", true), "</k");
    }
}
