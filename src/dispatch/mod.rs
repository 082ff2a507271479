//! The dispatcher: a Foreman service placed where stock imap-login hands over authenticated
//! clients (master-interface.md §14), so that a user's next connection goes to an idle imap
//! process that already belongs to that user. docs/reuse.md describes how it fits with the
//! master and anvil; this module's submodules implement it. Design note: docs/dispatch.md.
//!
//! - [`core`]: pure decisions (user validation, LOGIN reply bytes, retry rules).
//! - [`caps`]: the post-login capability string, as stock imap computes it.
//! - [`shell`]: the tokio shell ([`run`] under a master, [`serve`] for tests).

pub mod caps;
pub mod core;
pub mod shell;
#[cfg(test)]
mod tests;

pub use shell::{run, serve, DispatchError, Options};

use std::fmt::Write as _;
use std::path::Path;

/// Name of the dispatcher's service and of its listener under `$BASE/login/`.
pub const SERVICE_NAME: &str = "foreman-dispatch";

/// The knobs of the reuse set-up that differ between the demo, tests and benchmarks.
#[derive(Debug, Clone)]
pub struct ReuseConfig {
    /// `process_limit` of the imap service.
    pub process_limit: u32,
    /// `process_limit_margin` of the imap service.
    pub process_limit_margin: u32,
    /// Fresh spare imap processes kept ready (`process_min_avail`).
    pub fresh_spares: u32,
    /// `idle_kill` of the imap service, e.g. `"60 secs"`.
    pub idle_kill: String,
}

impl Default for ReuseConfig {
    fn default() -> Self {
        ReuseConfig {
            process_limit: 256,
            process_limit_margin: 2,
            fresh_spares: 2,
            idle_kill: "60 secs".to_owned(),
        }
    }
}

/// The dovecot.conf lines that turn per-user reuse on: imap-login hands clients to the
/// dispatcher (`foreman` is the path of the foreman binary), imap processes get a per-process
/// imap-master listener and serve one client at a time. Append them to a config that already
/// has `protocols = imap` and the imap-login inet listener.
pub fn reuse_config(foreman: &Path, c: &ReuseConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "service imap-login {{\n  executable = imap-login -l {SERVICE_NAME}\n}}"
    );
    let _ = writeln!(
        s,
        "service {SERVICE_NAME} {{\n  executable = {} dispatch\n  user = root\n  \
         process_limit = 1\n  process_min_avail = 1\n  service_count = 0\n  \
         client_limit = 4096\n  unix_listener login/{SERVICE_NAME} {{\n    mode = 0666\n  }}\n}}",
        foreman.display()
    );
    let _ = writeln!(
        s,
        "service imap {{\n  service_count = 0\n  client_limit = 1\n  process_limit = {}\n  \
         process_limit_margin = {}\n  process_min_avail = {}\n  idle_kill = {}\n  \
         unix_listener imap-master-%{{pid}} {{\n    mode = 0600\n    user = root\n  }}\n}}",
        c.process_limit, c.process_limit_margin, c.fresh_spares, c.idle_kill
    );
    s
}
