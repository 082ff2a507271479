//! The settings universe: every setting name stock doveconf 2.3.19.1 knows, per context, with its
//! value type and default, plus the list sections and where they may appear.
//!
//! `data/settings.tsv` and `data/stock-defaults.conf` are measured from the installed doveconf by
//! `fixtures/config/tools/gen-settings-table.py` (names and defaults from `doveconf -a`/`-d`, types
//! by probing each key with a bad value). Foreman's own settings are added here by hand and are
//! flagged so the stock rendering can drop them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use super::value::Kind;

/// The raw generated table.
const SETTINGS_TSV: &str = include_str!("data/settings.tsv");
/// Global settings of the auth root: doveconf rejects them inside local/remote/local_name.
const AUTH_SETTINGS_TXT: &str = include_str!("data/auth-settings.txt");
/// `doveconf -d` without its banner: global defaults and the built-in services.
pub const STOCK_DEFAULTS_CONF: &str = include_str!("data/stock-defaults.conf");

/// One known setting.
#[derive(Debug, Clone)]
pub struct Setting {
    pub kind: Kind,
    /// The default in printed (canonical) form.
    pub default: String,
    /// A Foreman extension stock doveconf rejects.
    pub foreman_only: bool,
}

/// How a section type word behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `type name { }`: same name edits the same element.
    Named,
    /// `type { }`: every block is a new element (`passdb`, `userdb`).
    Anonymous,
    /// `type { key = value }` with free keys (`plugin`, `dict`).
    StrMap,
}

/// The Foreman-only settings: (context, key, kind, default).
pub const FOREMAN_SETTINGS: &[(&str, &str, &str, &str)] =
    &[("service", "process_limit_margin", "uint", "0")];

/// The list sections: (parent context, type word, kind). The element context is
/// `parent/type` (or `type` at top level).
const LISTS: &[(&str, &str, ListKind)] = &[
    ("", "service", ListKind::Named),
    ("", "namespace", ListKind::Named),
    ("", "passdb", ListKind::Anonymous),
    ("", "userdb", ListKind::Anonymous),
    ("", "metric", ListKind::Named),
    ("", "event_exporter", ListKind::Named),
    ("", "plugin", ListKind::StrMap),
    ("", "dict", ListKind::StrMap),
    ("service", "unix_listener", ListKind::Named),
    ("service", "fifo_listener", ListKind::Named),
    ("service", "inet_listener", ListKind::Named),
    ("namespace", "mailbox", ListKind::Named),
];

/// All contexts and their settings.
#[derive(Debug)]
pub struct Table {
    contexts: BTreeMap<String, BTreeMap<String, Setting>>,
}

impl Table {
    /// The process-wide table (parsed once).
    pub fn get() -> &'static Table {
        static TABLE: OnceLock<Table> = OnceLock::new();
        TABLE.get_or_init(Table::load)
    }

    fn load() -> Table {
        let mut contexts: BTreeMap<String, BTreeMap<String, Setting>> = BTreeMap::new();
        let rows = SETTINGS_TSV
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty());
        let generated = rows.filter_map(|line| {
            let mut cols = line.splitn(4, '\t');
            let (ctx, key, kind, default) = (
                cols.next()?,
                cols.next()?,
                cols.next()?,
                cols.next().unwrap_or(""),
            );
            Some((if ctx == "." { "" } else { ctx }, key, kind, default, false))
        });
        let foreman = FOREMAN_SETTINGS
            .iter()
            .map(|&(c, k, t, d)| (c, k, t, d, true));
        for (ctx, key, kind, default, foreman_only) in generated.chain(foreman) {
            let Some(kind) = Kind::from_table(kind) else {
                continue;
            };
            let setting = Setting {
                kind,
                default: default.to_owned(),
                foreman_only,
            };
            contexts
                .entry(ctx.to_owned())
                .or_default()
                .insert(key.to_owned(), setting);
        }
        Table { contexts }
    }

    /// A plain setting `key` in context `ctx` ("" = global, "service/unix_listener", ...).
    pub fn setting(&self, ctx: &str, key: &str) -> Option<&Setting> {
        self.contexts.get(ctx)?.get(key)
    }

    /// A global setting doveconf refuses inside `local`/`remote`/`local_name` filters.
    pub fn is_auth_setting(&self, key: &str) -> bool {
        AUTH_SETTINGS_TXT.lines().any(|k| k == key)
    }

    /// All settings of a context, sorted by key.
    pub fn settings(&self, ctx: &str) -> impl Iterator<Item = (&str, &Setting)> {
        self.contexts
            .get(ctx)
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, s)| (k.as_str(), s)))
    }

    /// The kind of list section `word` opened in context `ctx`, if it is one.
    pub fn list(&self, ctx: &str, word: &str) -> Option<ListKind> {
        LISTS
            .iter()
            .find(|(c, w, _)| *c == ctx && *w == word)
            .map(|(_, _, k)| *k)
    }
}

/// The element context of list `word` opened in `ctx`.
pub fn child_context(ctx: &str, word: &str) -> String {
    if ctx.is_empty() {
        word.to_owned()
    } else {
        format!("{ctx}/{word}")
    }
}

/// Escapes a section name for the flat key form (`/` → `\s`, `=` → `\e`, space → `\_`,
/// `,` → `\+`, `\` → `\\`).
pub fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '/' => out.push_str("\\s"),
            '=' => out.push_str("\\e"),
            ' ' => out.push_str("\\_"),
            ',' => out.push_str("\\+"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape_name`].
pub fn unescape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push('/'),
            Some('e') => out.push('='),
            Some('_') => out.push(' '),
            Some('+') => out.push(','),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_master_settings() {
        let t = Table::get();
        assert_eq!(t.setting("", "base_dir").unwrap().default, "/run/dovecot");
        assert_eq!(t.setting("service", "vsz_limit").unwrap().kind, Kind::Size);
        assert_eq!(
            t.setting("service/unix_listener", "mode").unwrap().kind,
            Kind::Octal
        );
        assert!(
            t.setting("service", "process_limit_margin")
                .unwrap()
                .foreman_only
        );
        assert!(t.setting("", "nonexistent").is_none());
        assert_eq!(t.list("service", "unix_listener"), Some(ListKind::Named));
    }

    #[test]
    fn names_escape_round_trip() {
        let n = "a/b=c d,e\\f";
        assert_eq!(escape_name(n), "a\\sb\\ec\\_d\\+e\\\\f");
        assert_eq!(unescape_name(&escape_name(n)), n);
    }
}
