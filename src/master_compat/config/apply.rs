//! Phase 2: the raw tree → a [`Store`] of typed, checked settings per filter.
//!
//! Settings are kept in doveconf's flat key form (`service/imap/unix_listener/login\simap/mode`),
//! values in the canonical form doveconf prints, each with the position that set it. Every
//! statement is applied in order to the current filter and section, as doveconf does, so
//! `$key` self-references see the value "so far". Errors are collected, not fatal.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::error::{ConfigError, Warning};
use super::grammar::unquote;
use super::raw::{relative_to, Node, Pos, RawTree};
use super::table::{child_context, escape_name, ListKind, Table};
use super::value::normalize;

/// How `$variables` and `<file` values are treated (config-syntax.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `doveconf -n`/`-a`: keep them literally (except `key = $key ...`).
    #[default]
    Literal,
    /// `doveconf -x` / master start-up: substitute and read files.
    Expand,
}

/// Options for phase 2.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    pub mode: Mode,
    /// Accept Foreman's extensions (`process_limit_margin`, `%{pid}` listeners) and validate them.
    pub foreman: bool,
}

/// An IP network of a `local`/`remote` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub bits: u8,
}

impl Net {
    /// `1.2.3.4`, `10.0.0.0/8`, `::1/128`. Errors are doveconf's text.
    pub fn parse(text: &str) -> Result<Net, String> {
        let (ip, bits) = match text.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (text, None),
        };
        let addr: IpAddr = ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("gethostbyname({ip}) failed: Name or service not known"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => match b.parse::<u8>() {
                Ok(n) if n <= max && b.bytes().all(|c| c.is_ascii_digit()) => n,
                _ => return Err(format!("Invalid network mask: {b}")),
            },
        };
        Ok(Net { addr, bits })
    }

    fn prefix(&self) -> u128 {
        let (v, width) = match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
            IpAddr::V6(a) => (u128::from(a), 128),
        };
        let shift = width - u32::from(self.bits);
        if shift >= 128 {
            0
        } else {
            v >> shift
        }
    }

    /// `other` lies inside `self`.
    pub fn contains(&self, other: &Net) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && other.bits >= self.bits
            && Net {
                addr: other.addr,
                bits: self.bits,
            }
            .prefix()
                == self.prefix()
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.bits == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.bits)
        }
    }
}

/// The criteria of a filter block; all `None` = global.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub protocol: Option<String>,
    pub local: Option<Net>,
    pub local_name: Option<String>,
    pub remote: Option<Net>,
}

/// A value and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub value: String,
    pub pos: Option<Pos>,
}

/// The elements of one list (`service`, `service/imap/unix_listener`, ...).
#[derive(Debug, Clone, Default)]
pub struct ListInfo {
    pub ctx: String,
    /// Element ids (escaped names, or positions for unnamed ones) in order of appearance.
    pub ids: Vec<String>,
    /// Ids that are positions, not names (printed as `type {`).
    pub unnamed: BTreeSet<String>,
}

/// The settings of one filter block.
#[derive(Debug, Clone, Default)]
pub struct FilterBlock {
    pub filter: Filter,
    pub parent: Option<usize>,
    pub pos: Option<Pos>,
    pub values: BTreeMap<String, Assigned>,
    pub lists: BTreeMap<String, ListInfo>,
}

/// All settings after phase 2.
#[derive(Debug, Clone, Default)]
pub struct Store {
    /// `filters[0]` is the global block.
    pub filters: Vec<FilterBlock>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
}

/// A list frame while walking sections.
#[derive(Debug, Clone)]
struct Frame {
    /// Key prefix of the element, ending in `/`.
    prefix: String,
    /// Table context of the element.
    ctx: String,
    kind: ListKind,
    /// `service { unix_listener { ` for "Unknown setting" messages.
    label: String,
}

/// Flat defaults to resolve `$key` against (the stock defaults store's global values).
pub type Defaults = BTreeMap<String, String>;

struct Applier<'a> {
    table: &'static Table,
    opts: ApplyOptions,
    defaults: Option<&'a Defaults>,
    store: Store,
}

/// Applies a raw tree. `defaults` = flattened stock defaults (None while building them).
pub fn apply(tree: &RawTree, opts: ApplyOptions, defaults: Option<&Defaults>) -> Store {
    let mut a = Applier {
        table: Table::get(),
        opts,
        defaults,
        store: Store {
            filters: vec![FilterBlock::default()],
            errors: Vec::new(),
            warnings: Vec::new(),
        },
    };
    a.walk(&tree.root, 0, None);
    a.store
}

const FILTER_WORDS: &[&str] = &["protocol", "local", "remote", "local_name"];

impl Applier<'_> {
    fn error(&mut self, pos: &Pos, msg: impl Into<String>) {
        self.store.errors.push(ConfigError::at(pos, msg));
    }

    fn walk(&mut self, nodes: &[Node], filter: usize, frame: Option<&Frame>) {
        for node in nodes {
            match node {
                Node::Setting { pos, key, value } => self.setting(pos, key, value, filter, frame),
                Node::Error { pos, message } => self.error(pos, message.clone()),
                Node::Warning { pos, message } => {
                    let errors_before = self.store.errors.len();
                    self.store.warnings.push(Warning {
                        errors_before,
                        ..Warning::at(pos, message.clone())
                    });
                }
                Node::Section {
                    pos,
                    kind,
                    name,
                    children,
                    ..
                } => self.section(pos, kind, name.as_deref(), children, filter, frame),
            }
        }
    }

    fn section(
        &mut self,
        pos: &Pos,
        kind: &str,
        name: Option<&str>,
        children: &[Node],
        filter: usize,
        frame: Option<&Frame>,
    ) {
        let (ctx, prefix, label) = match frame {
            Some(f) if f.kind == ListKind::StrMap => {
                return self.error(pos, "Section not allowed here")
            }
            Some(f) => (f.ctx.as_str(), f.prefix.as_str(), f.label.as_str()),
            None => ("", "", ""),
        };
        if frame.is_none() && FILTER_WORDS.contains(&kind) {
            if let Some(new) = self.open_filter(pos, kind, name.unwrap_or(""), filter) {
                self.walk(children, new, None);
            }
            return;
        }
        if let Some(list_kind) = self.table.list(ctx, kind) {
            if ctx.is_empty()
                && matches!(kind, "passdb" | "userdb")
                && self.in_network_filter(filter)
            {
                return self.error(
                    pos,
                    format!("Auth settings not supported inside local/remote blocks: {kind}"),
                );
            }
            if self.opts.foreman {
                self.check_pid_token(pos, ctx, kind, name);
            }
            let list_key = format!("{prefix}{kind}");
            let child_ctx = child_context(ctx, kind);
            let block = &mut self.store.filters[filter];
            let info = block
                .lists
                .entry(list_key.clone())
                .or_insert_with(|| ListInfo {
                    ctx: child_ctx.clone(),
                    ..Default::default()
                });
            let element_prefix = match list_kind {
                ListKind::StrMap => format!("{list_key}/"),
                ListKind::Named if name.is_some() => {
                    let id = escape_name(name.unwrap_or_default());
                    if !info.ids.contains(&id) {
                        info.ids.push(id.clone());
                    }
                    format!("{list_key}/{id}/")
                }
                _ => {
                    let id = info.ids.len().to_string();
                    info.ids.push(id.clone());
                    info.unnamed.insert(id.clone());
                    format!("{list_key}/{id}/")
                }
            };
            if list_kind == ListKind::Anonymous {
                if let Some(n) = name {
                    self.assign(filter, format!("{element_prefix}name"), n.to_owned(), pos);
                }
            }
            let child = Frame {
                prefix: element_prefix,
                ctx: child_ctx,
                kind: list_kind,
                label: format!("{label}{kind} {{ "),
            };
            self.walk(children, filter, Some(&child));
            return;
        }
        if self.table.setting(ctx, kind).is_some() {
            // Quirk: a plain setting opened as a section is set to the section's name.
            let value = name.unwrap_or("0").to_owned();
            self.set_value(pos, filter, prefix, ctx, label, kind, &value);
            return;
        }
        self.error(pos, format!("Unknown setting: {label}{kind} {{ {kind}"));
    }

    fn in_network_filter(&self, filter: usize) -> bool {
        let f = &self.store.filters[filter].filter;
        f.local.is_some() || f.remote.is_some() || f.local_name.is_some()
    }

    /// `%{pid}` only in unix_listener names, at most once (Foreman extension).
    fn check_pid_token(&mut self, pos: &Pos, ctx: &str, kind: &str, name: Option<&str>) {
        let Some(name) = name else { return };
        let count = name.matches(super::listener::PID_TOKEN).count();
        if count == 0 {
            return;
        }
        if ctx != "service" || kind != "unix_listener" {
            self.error(
                pos,
                format!("%{{pid}} is only allowed in unix_listener paths, not in {kind} {name}"),
            );
        } else if count > 1 {
            self.error(
                pos,
                format!("unix_listener {name}: %{{pid}} may appear only once"),
            );
        } else if name
            .rsplit('/')
            .next()
            .is_some_and(|base| base == super::listener::PID_TOKEN)
        {
            self.error(
                pos,
                format!("unix_listener {name}: the file name must not be only %{{pid}}"),
            );
        }
    }

    fn open_filter(&mut self, pos: &Pos, kind: &str, name: &str, parent: usize) -> Option<usize> {
        let cur = self.store.filters[parent].filter.clone();
        let mut f = cur.clone();
        let nested_err = match kind {
            "protocol" if cur.protocol.is_some() => Some("Nested protocol { protocol { .. } } block not allowed".to_owned()),
            "local" | "remote" | "local_name" if cur.protocol.is_some() => {
                Some(format!("protocol {{ {kind} {{ .. }} }} not allowed (use {kind} {{ protocol {{ .. }} }} instead)"))
            }
            "local" | "local_name" if cur.remote.is_some() => {
                Some(format!("remote {{ {kind} {{ .. }} }} not allowed (use {kind} {{ remote {{ .. }} }} instead)"))
            }
            "local" if cur.local_name.is_some() => {
                Some("local_name { local { .. } } not allowed (use local { local_name { .. } } instead)".to_owned())
            }
            _ => None,
        };
        if let Some(e) = nested_err {
            self.error(pos, e);
            return None;
        }
        match kind {
            "protocol" => f.protocol = Some(name.to_owned()),
            "local_name" => f.local_name = Some(name.to_owned()),
            _ => {
                let net = match Net::parse(name) {
                    Ok(n) => n,
                    Err(e) => {
                        self.error(pos, e);
                        return None;
                    }
                };
                let outer = if kind == "local" {
                    &cur.local
                } else {
                    &cur.remote
                };
                if let Some(outer) = outer {
                    if !outer.contains(&net) {
                        self.error(pos, format!("{kind} net1 {{ {kind} net2 {{ .. }} }} requires net2 to be inside net1"));
                        return None;
                    }
                }
                if kind == "local" {
                    f.local = Some(net);
                } else {
                    f.remote = Some(net);
                }
            }
        }
        if let Some(i) = self.store.filters.iter().position(|b| b.filter == f) {
            return Some(i);
        }
        self.store.filters.push(FilterBlock {
            filter: f,
            parent: Some(parent),
            pos: Some(pos.clone()),
            ..Default::default()
        });
        Some(self.store.filters.len() - 1)
    }

    fn setting(&mut self, pos: &Pos, key: &str, raw: &str, filter: usize, frame: Option<&Frame>) {
        let (ctx, prefix, label) = match frame {
            Some(f) if f.kind == ListKind::StrMap => {
                let value = self.expand(pos, &format!("{}{key}", f.prefix), key, raw, filter, true);
                if let Some(v) = value {
                    self.assign(filter, format!("{}{key}", f.prefix), v, pos);
                }
                return;
            }
            Some(f) => (f.ctx.clone(), f.prefix.clone(), f.label.clone()),
            None => (String::new(), String::new(), String::new()),
        };
        if frame.is_none() && key.contains('/') {
            return self.flat_setting(pos, key, raw, filter);
        }
        self.set_value(pos, filter, &prefix, &ctx, &label, key, raw);
    }

    #[allow(clippy::too_many_arguments)]
    fn set_value(
        &mut self,
        pos: &Pos,
        filter: usize,
        prefix: &str,
        ctx: &str,
        label: &str,
        key: &str,
        raw: &str,
    ) {
        let Some(setting) = self.table.setting(ctx, key) else {
            return self.error(pos, format!("Unknown setting: {label}{key}"));
        };
        if setting.foreman_only && !self.opts.foreman {
            return self.error(pos, format!("Unknown setting: {label}{key}"));
        }
        let full = format!("{prefix}{key}");
        let Some(text) = self.expand(pos, &full, key, raw, filter, false) else {
            return;
        };
        let value = match normalize(&setting.kind, &text) {
            Ok(v) => v,
            Err(e) => return self.error(pos, e),
        };
        if ctx.is_empty() && self.in_network_filter(filter) && self.table.is_auth_setting(key) {
            return self.error(
                pos,
                format!("Auth settings not supported inside local/remote blocks: {key}"),
            );
        }
        self.assign(filter, full, value, pos);
    }

    /// `service/imap/process_limit = 5` at top level.
    fn flat_setting(&mut self, pos: &Pos, key: &str, raw: &str, filter: usize) {
        let segs: Vec<&str> = key.split('/').collect();
        let mut ctx = String::new();
        let mut prefix = String::new();
        let mut i = 0;
        while i < segs.len() {
            let seg = segs[i];
            match self.table.list(&ctx, seg) {
                Some(ListKind::StrMap) if i + 1 < segs.len() => {
                    let full = format!("{prefix}{seg}/{}", segs[i + 1..].join("/"));
                    let info = self.store.filters[filter]
                        .lists
                        .entry(format!("{prefix}{seg}"))
                        .or_default();
                    info.ctx = child_context(&ctx, seg);
                    if let Some(v) =
                        self.expand(pos, &full, segs[segs.len() - 1], raw, filter, true)
                    {
                        self.assign(filter, full, v, pos);
                    }
                    return;
                }
                Some(kind @ (ListKind::Named | ListKind::Anonymous)) if i + 2 < segs.len() => {
                    let id = segs[i + 1].to_owned();
                    let list_key = format!("{prefix}{seg}");
                    let child_ctx = child_context(&ctx, seg);
                    let info = self.store.filters[filter]
                        .lists
                        .entry(list_key.clone())
                        .or_default();
                    info.ctx = child_ctx.clone();
                    if !info.ids.contains(&id) {
                        info.ids.push(id.clone());
                        if kind == ListKind::Anonymous {
                            info.unnamed.insert(id.clone());
                        }
                    }
                    prefix = format!("{list_key}/{id}/");
                    ctx = child_ctx;
                    i += 2;
                }
                _ if i + 1 == segs.len() && self.table.setting(&ctx, seg).is_some() => {
                    let label = String::new();
                    let (p, c) = (prefix.clone(), ctx.clone());
                    return self.set_value_flat(pos, filter, &p, &c, &label, seg, raw, key);
                }
                _ => break,
            }
        }
        self.error(pos, format!("Unknown setting: {key}"));
    }

    #[allow(clippy::too_many_arguments)]
    fn set_value_flat(
        &mut self,
        pos: &Pos,
        filter: usize,
        prefix: &str,
        ctx: &str,
        label: &str,
        key: &str,
        raw: &str,
        full_key: &str,
    ) {
        if self
            .table
            .setting(ctx, key)
            .is_some_and(|s| s.foreman_only && !self.opts.foreman)
        {
            return self.error(pos, format!("Unknown setting: {full_key}"));
        }
        self.set_value(pos, filter, prefix, ctx, label, key, raw)
    }

    fn assign(&mut self, filter: usize, key: String, value: String, pos: &Pos) {
        self.store.filters[filter].values.insert(
            key,
            Assigned {
                value,
                pos: Some(pos.clone()),
            },
        );
    }

    /// The current value of a flat key as seen from `filter` (its own value, then its parents',
    /// then the stock default).
    fn current(&self, filter: usize, full: &str, ctx_key: Option<(&str, &str)>) -> Option<String> {
        let mut f = Some(filter);
        while let Some(i) = f {
            if let Some(a) = self.store.filters[i].values.get(full) {
                return Some(a.value.clone());
            }
            f = self.store.filters[i].parent;
        }
        if let Some(v) = self.defaults.and_then(|d| d.get(full)) {
            return Some(v.clone());
        }
        let (ctx, key) = ctx_key?;
        self.table.setting(ctx, key).map(|s| s.default.clone())
    }

    /// Unquotes and resolves `$variables` / `<file` (config-syntax.md §4.2–§4.3).
    fn expand(
        &mut self,
        pos: &Pos,
        full: &str,
        key: &str,
        raw: &str,
        filter: usize,
        strmap: bool,
    ) -> Option<String> {
        let v = unquote(raw);
        if v.quoted {
            return Some(v.text);
        }
        let text = v.text;
        let expand_all = self.opts.mode == Mode::Expand;
        if expand_all {
            if let Some(path) = text.strip_prefix('<') {
                let path = relative_to(pos.dir(), path.trim_start());
                return match std::fs::read_to_string(&path) {
                    Ok(content) => Some(content),
                    Err(e) => {
                        self.error(
                            pos,
                            format!(
                                "{key}: Can't open file {path}: {}",
                                super::raw::io_reason(&e)
                            ),
                        );
                        None
                    }
                };
            }
        }
        if !text.contains('$') {
            return Some(text);
        }
        let mut changed = false;
        let mut out = Vec::new();
        let ctx_of_full = full.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        for token in text.split([' ', '\t']).filter(|t| !t.is_empty()) {
            let Some(name) = token.strip_prefix('$') else {
                out.push(token.to_owned());
                continue;
            };
            if name == key && !strmap {
                let ctx = self.ctx_of(ctx_of_full);
                out.push(
                    self.current(filter, full, Some((&ctx, key)))
                        .unwrap_or_default(),
                );
                changed = true;
            } else if !expand_all {
                out.push(token.to_owned());
            } else if let Some(env) = name.strip_prefix("ENV:") {
                out.push(std::env::var(env).unwrap_or_default());
                changed = true;
            } else if let Some(val) = self.current(filter, name, Some(("", name))) {
                out.push(val);
                changed = true;
            } else {
                self.error(pos, format!("Unknown variable: {token}"));
                return None;
            }
        }
        Some(if changed { out.join(" ") } else { text })
    }

    /// The table context of an element key prefix such as `service/imap/unix_listener/x`.
    fn ctx_of(&self, prefix: &str) -> String {
        let mut ctx = String::new();
        let segs: Vec<&str> = if prefix.is_empty() {
            Vec::new()
        } else {
            prefix.split('/').collect()
        };
        let mut i = 0;
        while i < segs.len() {
            if self.table.list(&ctx, segs[i]).is_some() {
                ctx = child_context(&ctx, segs[i]);
            }
            i += 2;
        }
        ctx
    }
}

#[cfg(test)]
mod tests {
    use super::super::raw::{parse_str, Limits};
    use super::*;

    fn store(text: &str) -> Store {
        apply(
            &parse_str("t.conf", text, Limits::default()),
            ApplyOptions::default(),
            None,
        )
    }

    #[test]
    fn settings_go_to_flat_keys() {
        let s = store("service imap {\n unix_listener login/imap {\n mode = 666\n }\n}\nplugin {\n quota = x\n}\n");
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let v = &s.filters[0].values;
        assert_eq!(
            v["service/imap/unix_listener/login\\simap/mode"].value,
            "01232"
        );
        assert_eq!(v["plugin/quota"].value, "x");
    }

    #[test]
    fn unknown_settings_name_their_section() {
        let s =
            store("service imap {\n unix_listener x {\n foo = 1\n }\n bar y {\n }\n}\nbaz = 1\n");
        let msgs: Vec<String> = s.errors.iter().map(|e| e.message.clone()).collect();
        assert_eq!(
            msgs,
            vec![
                "Unknown setting: service { unix_listener { foo",
                "Unknown setting: service { bar { bar",
                "Unknown setting: baz"
            ]
        );
    }

    #[test]
    fn self_reference_extends_lists() {
        let s = store("mail_plugins = $mail_plugins quota\nprotocol imap {\n mail_plugins = $mail_plugins imap_quota\n}\n");
        assert_eq!(s.filters[0].values["mail_plugins"].value, " quota");
        assert_eq!(
            s.filters[1].values["mail_plugins"].value,
            " quota imap_quota"
        );
    }

    #[test]
    fn filters_nest_and_check() {
        let s = store("protocol imap {\n local 1.2.3.4 {\n }\n}\nlocal 10.0.0.0/8 {\n local 10.1.0.0/16 {\n login_greeting = x\n }\n}\n");
        assert_eq!(
            s.errors[0].message,
            "protocol { local { .. } } not allowed (use local { protocol { .. } } instead)"
        );
        assert_eq!(s.errors.len(), 1);
        assert_eq!(
            s.filters
                .last()
                .unwrap()
                .filter
                .local
                .as_ref()
                .unwrap()
                .to_string(),
            "10.1.0.0/16"
        );
    }

    #[test]
    fn pid_token_only_in_unix_listeners() {
        let tree = parse_str(
            "t.conf",
            "service imap {\n unix_listener imap-master-%{pid} {\n }\n fifo_listener f-%{pid} {\n }\n unix_listener a-%{pid}-%{pid} {\n }\n process_limit_margin = 2\n}\n",
            Limits::default(),
        );
        let s = apply(
            &tree,
            ApplyOptions {
                foreman: true,
                ..Default::default()
            },
            None,
        );
        assert_eq!(s.errors.len(), 2, "{:?}", s.errors);
        assert_eq!(
            s.filters[0].values["service/imap/process_limit_margin"].value,
            "2"
        );
        let stock = apply(&tree, ApplyOptions::default(), None);
        assert_eq!(stock.errors.len(), 1);
        assert_eq!(
            stock.errors[0].message,
            "Unknown setting: service { process_limit_margin"
        );
    }
}
