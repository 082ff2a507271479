//! `foreman config`: load a config and print it the way `doveconf` does, with the same
//! messages and exit status (89 on errors), so the two can be compared line by line.

use std::io::Write;

use super::dump::{dump, Scope};
use super::{load, LoadOptions, Mode};

/// Exit status doveconf uses for configuration errors (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 89;

/// Arguments of `foreman config`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// The configuration file.
    #[arg(short = 'c', default_value = "/etc/dovecot/dovecot.conf")]
    pub config: String,
    /// Print only settings that differ from the defaults.
    #[arg(short = 'n', conflicts_with = "all")]
    pub changed: bool,
    /// Print all settings (the default).
    #[arg(short = 'a')]
    pub all: bool,
    /// Show secrets.
    #[arg(short = 'P')]
    pub show_secrets: bool,
    /// Expanding mode: substitute `$variables` and read `<file` values.
    #[arg(short = 'x')]
    pub expand: bool,
    /// Behave exactly like stock doveconf: reject Foreman's extensions.
    #[arg(long)]
    pub stock: bool,
    /// Print every error, not only the first (doveconf stops at the first).
    #[arg(long)]
    pub all_errors: bool,
    /// Also write a flattened copy without Foreman's extensions to this path.
    #[arg(long, value_name = "PATH")]
    pub render_stock: Option<String>,
}

/// Runs `foreman config`; returns the exit status.
pub fn run(args: &ConfigArgs) -> u8 {
    let opts = LoadOptions {
        mode: if args.expand {
            Mode::Expand
        } else {
            Mode::Literal
        },
        foreman: !args.stock,
        ..Default::default()
    };
    let loaded = load(&args.config, opts);
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stdout,
        "# Foreman {} (Dovecot 2.3.19.1 syntax): {}",
        env!("CARGO_PKG_VERSION"),
        args.config
    );
    for w in &loaded.warnings {
        // doveconf stops at its first error: later warnings never show (unless asked for all).
        if w.errors_before == 0 || args.all_errors {
            let _ = writeln!(stderr, "foreman: Warning: {w}");
        }
    }
    // Line errors stop doveconf before it prints anything; whole-file errors (a missing `}`,
    // settings checks) come after the configuration is printed.
    let (check, fatal): (Vec<_>, Vec<_>) = loaded
        .errors
        .iter()
        .partition(|e| matches!(e.place, super::error::Place::File(_)));
    if !fatal.is_empty() {
        let shown = if args.all_errors { fatal.len() } else { 1 };
        for e in fatal.iter().take(shown) {
            let _ = writeln!(stderr, "foreman: Fatal: {e}");
        }
        return EXIT_CONFIG;
    }
    let scope = if args.changed {
        Scope::Changed
    } else {
        Scope::All
    };
    let _ = stdout.write_all(dump(&loaded, scope, args.show_secrets).as_bytes());
    if let Some(path) = &args.render_stock {
        if let Err(e) = std::fs::write(path, super::render::stock_copy(&loaded.tree.root)) {
            let _ = writeln!(stderr, "foreman: Fatal: write({path}) failed: {e}");
            return EXIT_CONFIG;
        }
    }
    if !check.is_empty() {
        let shown = if args.all_errors { check.len() } else { 1 };
        for e in check.iter().take(shown) {
            if e.check {
                let _ = writeln!(stderr, "foreman: Error: {}", e.message);
            }
            let _ = writeln!(stderr, "foreman: Fatal: {e}");
        }
        return EXIT_CONFIG;
    }
    0
}
