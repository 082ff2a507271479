//! Settings checks after the whole file is applied (config-syntax.md §9, master-interface.md
//! §3.2): the master's checks on the typed model, plus the few section checks that change what
//! `doveconf -n` prints (namespaces get `location`/`prefix`, passdb/userdb need a driver).
//! Messages are doveconf's; doveconf stops at the first, we return all.

use std::collections::BTreeSet;

use super::apply::{Assigned, Store};
use super::model::{MasterSettings, ServiceType};

/// Services built with "process_limit must be 1" (measured with doveconf).
const PROCESS_LIMIT_1: &[&str] = &[
    "anvil",
    "auth",
    "director",
    "indexer",
    "ipc",
    "log",
    "old-stats",
];

/// Section checks that also fill in values (they then show in `-n` like doveconf's). Returns
/// the errors and the key prefixes of elements that failed (doveconf does not print those).
pub fn sections(store: &mut Store) -> (Vec<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut hidden = Vec::new();
    // passdb/userdb inside a filter get their `name` filled in (it then shows in -n).
    for block in store.filters.iter_mut().skip(1) {
        for db in ["passdb", "userdb"] {
            let ids = block
                .lists
                .get(db)
                .map(|l| l.ids.clone())
                .unwrap_or_default();
            for id in ids {
                let key = format!("{db}/{id}/name");
                block.values.entry(key).or_insert(Assigned {
                    value: String::new(),
                    pos: None,
                });
            }
        }
    }
    let global = &mut store.filters[0];
    if let Some(ns) = global.lists.get("namespace").cloned() {
        for id in &ns.ids {
            for field in ["location", "prefix"] {
                global
                    .values
                    .entry(format!("namespace/{id}/{field}"))
                    .or_insert(Assigned {
                        value: String::new(),
                        pos: None,
                    });
            }
        }
    }
    for db in ["passdb", "userdb"] {
        if let Some(list) = global.lists.get(db) {
            for id in &list.ids {
                if global
                    .values
                    .get(&format!("{db}/{id}/driver"))
                    .is_none_or(|a| a.value.is_empty())
                {
                    errors.push(format!("{db} is missing driver"));
                    hidden.push(format!("{db}/{id}/"));
                }
            }
        }
    }
    (errors, hidden)
}

fn user_exists(name: &str) -> bool {
    nix::unistd::User::from_name(name).ok().flatten().is_some()
}

/// The order in which stock 2.3.19.1 lists its built-in services (the `SERVICE=` export order,
/// master-interface.md §3.2); messages that list several services use it.
const STOCK_SERVICE_ORDER: &[&str] = &[
    "tcpwrap",
    "health-check",
    "submission",
    "submission-login",
    "stats",
    "replicator",
    "aggregator",
    "pop3",
    "pop3-login",
    "old-stats",
    "log",
    "lmtp",
    "ipc",
    "indexer-worker",
    "indexer",
    "imap",
    "imap-urlauth-worker",
    "imap-urlauth",
    "imap-urlauth-login",
    "imap-login",
    "imap-hibernate",
    "doveadm",
    "dns-client",
    "director",
    "dict",
    "dict-async",
    "config",
    "auth",
    "auth-worker",
    "anvil",
];

/// Services in stock listing order (unknown names after the built-in ones, by name).
pub fn stock_order(m: &MasterSettings) -> Vec<&super::model::Service> {
    let mut v: Vec<_> = m.services.iter().collect();
    v.sort_by_key(|s| {
        STOCK_SERVICE_ORDER
            .iter()
            .position(|n| *n == s.name)
            .unwrap_or(usize::MAX)
    });
    v
}

/// Warnings doveconf prints after a successful check.
pub fn master_warnings(m: &MasterSettings) -> Vec<String> {
    let mut warnings = Vec::new();
    let counted: Vec<_> = stock_order(m)
        .into_iter()
        .filter(|s| s.in_use(m))
        .filter(|s| {
            s.service_type == ServiceType::Login || (s.protocol == s.name && s.service_count != 1)
        })
        .collect();
    let needed: u64 = counted
        .iter()
        .map(|s| u64::from(s.effective_process_limit(m)))
        .sum();
    if let Some(auth) = m.service("auth").filter(|a| a.in_use(m)) {
        let limit = if auth.client_limit == 0 {
            m.default_client_limit
        } else {
            auth.client_limit
        };
        if u64::from(limit) < needed {
            let list: Vec<String> = counted
                .iter()
                .map(|s| {
                    format!(
                        "service {} {{ process_limit={} }}",
                        s.name,
                        s.effective_process_limit(m)
                    )
                })
                .collect();
            warnings.push(format!(
                "service auth {{ client_limit={limit} }} is lower than required under max. load ({needed}). \
                 Counted for protocol services with service_count != 1: {}",
                list.join(" + ")
            ));
        }
    }
    warnings
}

/// Checks of other components that show up with filters (measured with doveconf).
pub fn filter_only(values: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let get = |k: &str| values.get(k).map(String::as_str).unwrap_or("");
    let mut errors = Vec::new();
    if !get("auth_policy_server_url").is_empty() && get("auth_policy_hash_nonce").is_empty() {
        errors.push("auth_policy_hash_nonce must be set when policy server is used".to_owned());
    }
    errors
}

/// The master's checks; `foreman` adds the checks of Foreman's own settings.
pub fn master(m: &MasterSettings, foreman: bool) -> Vec<String> {
    let mut errors = Vec::new();
    if m.last_valid_uid != 0 && m.first_valid_uid > m.last_valid_uid {
        errors.push("first_valid_uid can't be larger than last_valid_uid".to_owned());
    }
    if m.last_valid_gid != 0 && m.first_valid_gid > m.last_valid_gid {
        errors.push("first_valid_gid can't be larger than last_valid_gid".to_owned());
    }
    if m.listen.is_empty() {
        errors.push("listen can't be set empty".to_owned());
    }
    if !user_exists(&m.default_login_user) {
        errors.push(format!(
            "default_login_user doesn't exist: {}",
            m.default_login_user
        ));
    }
    if !user_exists(&m.default_internal_user) {
        errors.push(format!(
            "default_internal_user doesn't exist: {}",
            m.default_internal_user
        ));
    }
    for p in &m.protocols {
        if !m.services.iter().any(|s| s.protocol == *p) {
            errors.push(format!("protocols: Unknown protocol: {p}"));
        }
    }
    if m.services.is_empty() {
        errors.push("No services defined".to_owned());
    }
    let mut seen = BTreeSet::new();
    for s in &m.services {
        if s.name.is_empty() {
            continue;
        }
        if let ServiceType::Unknown(word) = &s.service_type {
            errors.push(format!("Unknown service type: {word}"));
        }
        if !s.protocol_enabled(m) {
            continue;
        }
        let name = &s.name;
        if PROCESS_LIMIT_1.contains(&name.as_str()) && s.process_limit != 1 {
            errors.push(format!("service({name}): process_limit must be 1"));
        }
        if s.drop_priv_before_exec && !s.chroot.is_empty() {
            errors.push(format!(
                "service({name}): drop_priv_before_exec=yes can't be used with chroot"
            ));
        }
        let limit = s.effective_process_limit(m);
        if s.process_min_avail > limit {
            errors.push(format!(
                "service({name}): process_min_avail is higher than process_limit"
            ));
        }
        // Only an explicit service vsz_limit is checked (not default_vsz_limit).
        if s.vsz_limit != super::model::VSZ_UNSET && s.vsz_limit != 0 && s.vsz_limit < 1 << 20 {
            errors.push(format!("service({name}): vsz_limit is too low"));
        }
        if foreman && s.process_limit_margin > 0 && s.process_limit_margin >= limit {
            errors.push(format!(
                "service({name}): process_limit_margin ({}) must be lower than process_limit ({limit})",
                s.process_limit_margin
            ));
        }
        for l in s.unix_listeners.iter().chain(&s.fifo_listeners) {
            let path = l.path.to_string();
            if path.is_empty() {
                errors.push(format!(
                    "service({name}): unix_listener: path must not be empty"
                ));
            } else {
                let full = if path.starts_with('/') {
                    path
                } else {
                    format!("{}/{path}", m.base_dir)
                };
                if l.mode != 0 && !seen.insert(full.clone()) {
                    errors.push(format!("duplicate listener: {full}"));
                }
            }
        }
        for l in &s.inet_listeners {
            if l.port != 0 && !seen.insert(format!("{}:{}", l.port, l.address)) {
                errors.push(format!("duplicate listener: {}:{}", l.port, l.address));
            }
        }
    }
    errors
}
