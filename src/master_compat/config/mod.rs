//! dovecot.conf (2.3 syntax) loader: grammar → raw tree with positions → typed settings.
//!
//! Read `docs/config.md` first. The pipeline, one module per step:
//!
//! 1. [`grammar`]: one file's text → logical lines (comments, continuations) → statements (nom).
//! 2. [`raw`]: the main file plus `!include`s → a tree of settings and sections, each with its
//!    `file:line`; syntax errors collected (all of them, in file order).
//! 3. [`apply`]: the tree → a [`apply::Store`]: flat keys (`service/imap/process_limit`) per
//!    filter, values type-checked ([`value`]) against the settings universe ([`table`], measured
//!    from stock doveconf), `$var`/`<file` handled per [`apply::Mode`].
//! 4. [`check`]: the settings checks doveconf runs after parsing.
//! 5. [`model`]: the typed view the master uses ([`model::MasterSettings`]), stock defaults
//!    (all built-in services and listeners) included; [`listener`] has per-process paths.
//! 6. Output: [`dump`] prints like `doveconf -n`/`-a`; [`render`] writes a flattened copy
//!    without Foreman's extensions for stock processes.
//!
//! Errors are formatted exactly as doveconf prints them; doveconf stops at the first one, this
//! loader reports all (the first equals doveconf's).

pub mod apply;
pub mod check;
pub mod cli;
pub mod dump;
pub mod error;
pub mod glob;
pub mod grammar;
pub mod listener;
pub mod model;
pub mod raw;
pub mod render;
pub mod table;
pub mod value;

use std::collections::BTreeMap;
use std::sync::OnceLock;

pub use apply::{ApplyOptions, Mode};
pub use error::{ConfigError, Warning};
pub use listener::ListenerPath;
pub use model::{InetListener, MasterSettings, Service, ServiceType, UnixListener};
pub use raw::Limits;

use apply::{ListInfo, Store};
use raw::RawTree;

/// How to load.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    pub mode: Mode,
    /// Accept Foreman's extensions (the master does; `foreman config --stock` does not).
    pub foreman: bool,
    pub limits: Limits,
}

/// A loaded configuration, valid or not.
#[derive(Debug)]
pub struct Loaded {
    /// The main file as given.
    pub file: String,
    pub tree: RawTree,
    pub store: Store,
    /// Stock defaults overlaid with the global settings, new list elements filled with their
    /// defaults: what `doveconf -a` prints and what the model is built from.
    pub merged: BTreeMap<String, String>,
    pub merged_lists: BTreeMap<String, ListInfo>,
    /// The stock defaults (flat).
    pub defaults: &'static BTreeMap<String, String>,
    /// Syntax and apply errors (line errors), in file order, then settings-check errors.
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
    /// Key prefixes of list elements that failed their check (doveconf leaves them out).
    pub hidden: Vec<String>,
}

struct StockDefaults {
    values: BTreeMap<String, String>,
    lists: BTreeMap<String, ListInfo>,
}

fn stock_defaults() -> &'static StockDefaults {
    static DEFAULTS: OnceLock<StockDefaults> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        let tree = raw::parse_str(
            "stock-defaults.conf",
            table::STOCK_DEFAULTS_CONF,
            Limits::default(),
        );
        let store = apply::apply(&tree, ApplyOptions::default(), None);
        debug_assert!(store.errors.is_empty(), "{:?}", store.errors);
        let global = store.filters.into_iter().next().unwrap_or_default();
        StockDefaults {
            values: global
                .values
                .into_iter()
                .map(|(k, a)| (k, a.value))
                .collect(),
            lists: global.lists,
        }
    })
}

/// Loads `path` with everything it includes. Never fails: look at [`Loaded::errors`].
pub fn load(path: &str, opts: LoadOptions) -> Loaded {
    let tree = raw::parse_file(path, opts.limits);
    finish(path, tree, opts)
}

/// Loads config text that is not in a file (tests, fuzzing).
pub fn load_str(name: &str, text: &str, opts: LoadOptions) -> Loaded {
    let tree = raw::parse_str(name, text, opts.limits);
    finish(name, tree, opts)
}

fn finish(path: &str, tree: RawTree, opts: LoadOptions) -> Loaded {
    let defaults = stock_defaults();
    let mut store = apply::apply(
        &tree,
        ApplyOptions {
            mode: opts.mode,
            foreman: opts.foreman,
        },
        Some(&defaults.values),
    );
    let mut errors: Vec<ConfigError> = std::mem::take(&mut store.errors);
    errors.extend(tree.errors.iter().cloned());
    let warnings = std::mem::take(&mut store.warnings);
    let (section_errors, hidden) = check::sections(&mut store);
    let (merged, merged_lists) = merge(&defaults.values, &defaults.lists, &[&store.filters[0]]);
    let mut loaded = Loaded {
        file: path.to_owned(),
        tree,
        store,
        merged,
        merged_lists,
        defaults: &defaults.values,
        errors,
        warnings,
        hidden,
    };
    if loaded.errors.is_empty() {
        let master = loaded.master_settings();
        let checks = section_errors
            .into_iter()
            .chain(check::master(&master, opts.foreman));
        loaded
            .errors
            .extend(checks.map(|m| ConfigError::check(path, m)));
        if loaded.errors.is_empty() {
            loaded.errors.extend(filter_checks(&loaded, opts.foreman));
        }
        if loaded.errors.is_empty() {
            let n = loaded.errors.len();
            let late = check::master_warnings(&master).into_iter();
            loaded.warnings.extend(late.map(|w| Warning {
                errors_before: n,
                ..Warning::plain(w)
            }));
        }
    }
    loaded
}

/// doveconf also checks the settings as each filter sees them; those errors print only as the
/// final fatal line.
fn filter_checks(loaded: &Loaded, foreman: bool) -> Vec<ConfigError> {
    let defaults = stock_defaults();
    let filters = &loaded.store.filters;
    for i in 1..filters.len() {
        if filters[i].values.is_empty() {
            continue;
        }
        let mut chain = vec![&filters[i]];
        let mut parent = filters[i].parent;
        while let Some(p) = parent {
            chain.push(&filters[p]);
            parent = filters[p].parent;
        }
        chain.reverse();
        let (values, lists) = merge(&defaults.values, &defaults.lists, &chain);
        let master = model::View {
            values: &values,
            lists: &lists,
        }
        .master_settings();
        let mut errors = check::master(&master, foreman);
        errors.extend(check::filter_only(&values));
        if let Some(first) = errors.into_iter().next() {
            return vec![ConfigError::in_file(&loaded.file, first)];
        }
    }
    Vec::new()
}

/// Overlays `blocks` (outermost first) on the defaults; new list elements get their defaults.
fn merge(
    defaults: &BTreeMap<String, String>,
    default_lists: &BTreeMap<String, ListInfo>,
    blocks: &[&apply::FilterBlock],
) -> (BTreeMap<String, String>, BTreeMap<String, ListInfo>) {
    let mut values = defaults.clone();
    let mut lists = default_lists.clone();
    for block in blocks {
        overlay(&mut values, &mut lists, block);
    }
    (values, lists)
}

fn overlay(
    values: &mut BTreeMap<String, String>,
    lists: &mut BTreeMap<String, ListInfo>,
    global: &apply::FilterBlock,
) {
    let table = table::Table::get();
    for (list_key, info) in &global.lists {
        let merged = lists.entry(list_key.clone()).or_insert_with(|| ListInfo {
            ctx: info.ctx.clone(),
            ..Default::default()
        });
        for id in &info.ids {
            if merged.ids.contains(id) {
                continue;
            }
            merged.ids.push(id.clone());
            if info.unnamed.contains(id) {
                merged.unnamed.insert(id.clone());
            }
            if table.list(&parent(&info.ctx), last(&info.ctx)) == Some(table::ListKind::StrMap) {
                continue;
            }
            for (key, setting) in table.settings(&info.ctx) {
                if !setting.foreman_only {
                    values
                        .entry(format!("{list_key}/{id}/{key}"))
                        .or_insert_with(|| setting.default.clone());
                }
            }
        }
    }
    for (k, a) in &global.values {
        values.insert(k.clone(), a.value.clone());
    }
}

fn parent(ctx: &str) -> String {
    ctx.rsplit_once('/')
        .map(|(p, _)| p.to_owned())
        .unwrap_or_default()
}

fn last(ctx: &str) -> &str {
    ctx.rsplit('/').next().unwrap_or(ctx)
}

impl Loaded {
    /// The typed settings of the master (meaningful when [`Loaded::errors`] is empty).
    pub fn master_settings(&self) -> MasterSettings {
        model::View {
            values: &self.merged,
            lists: &self.merged_lists,
        }
        .master_settings()
    }

    /// The settings, or every error.
    pub fn into_result(self) -> Result<(MasterSettings, Loaded), Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok((self.master_settings(), self))
        } else {
            Err(self.errors)
        }
    }
}
