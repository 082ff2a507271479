//! `foreman demo`: the README's demo stack. Stock Dovecot 2.3 services (config, log, auth,
//! imap-login, imap, pop3-login, pop3, …) supervised by `foreman master`, with Foreman's
//! anvil and per-user reuse (the dispatcher, `dispatch::reuse_config`), on 127.0.0.1 high
//! ports in a temporary directory with two demo users of different uids, and instructions on
//! how to log in. Runs until SIGINT/SIGTERM, then stops everything it started.

use std::path::PathBuf;
use std::time::Duration;

use crate::stock::{StockDovecot, StockError};

/// The demo user's name and password.
pub const DEMO_USER: (&str, &str) = ("demo", "demo");
/// A second demo user, with another uid: its connections never share the first's processes.
pub const DEMO_USER2: (&str, &str) = ("alice", "alice");
/// The demo users' uids start here (one uid per user).
const DEMO_UID_BASE: u32 = 41000;

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Stock(#[from] StockError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("dovecot exited unexpectedly ({status}); log tail:\n{log_tail}")]
    Exited {
        status: std::process::ExitStatus,
        log_tail: String,
    },
}

/// Starts the stack with `foreman` (Foreman's binary) as the master and the anvil service,
/// and blocks until a signal arrives or the stack dies.
pub fn run(foreman: PathBuf) -> Result<(), DemoError> {
    let mut dovecot = StockDovecot::builder()
        .foreman_reuse(foreman.clone(), crate::dispatch::ReuseConfig::default())
        .user(DEMO_USER.0, DEMO_USER.1)
        .user(DEMO_USER2.0, DEMO_USER2.1)
        .distinct_uids(DEMO_UID_BASE)
        .seed_inboxes()
        .start()?;
    let imap = dovecot.imap_port().unwrap_or_default();
    // Stock doveadm refuses Foreman's settings (process_limit_margin): point it at the copy
    // without them that the master writes for the stock services.
    let stock_conf = dovecot
        .base_dir()
        .join(crate::master_compat::master::STOCK_CONFIG_NAME);
    let pop3 = dovecot.pop3_port().unwrap_or_default();
    println!(
        "Foreman demo: stock Dovecot 2.3 services under `foreman master`, with Foreman's anvil"
    );
    println!(
        "and per-user reuse: a user's next IMAP connection goes to that user's idle imap process"
    );
    println!();
    println!(
        "  IMAP  127.0.0.1:{imap}    try: socat - TCP:127.0.0.1:{imap}   then: a LOGIN demo demo"
    );
    println!("  POP3  127.0.0.1:{pop3}    try: socat - TCP:127.0.0.1:{pop3}   then: USER demo / PASS demo");
    println!(
        "  users {} / {}  and  {} / {}  (uids {} and {})",
        DEMO_USER.0,
        DEMO_USER.1,
        DEMO_USER2.0,
        DEMO_USER2.1,
        DEMO_UID_BASE,
        DEMO_UID_BASE + 1
    );
    println!();
    println!(
        "  who is logged in:  {} who -a {}",
        foreman.display(),
        dovecot.anvil_socket().display()
    );
    println!(
        "  imap processes per user (state, idle time):  {} who --processes -a {}",
        foreman.display(),
        dovecot.anvil_socket().display()
    );
    println!(
        "  same with stock:   doveadm -c {} who",
        stock_conf.display()
    );
    println!(
        "  auth penalties:    doveadm -c {} penalty",
        stock_conf.display()
    );
    println!(
        "  processes:         doveadm -c {} process status",
        stock_conf.display()
    );
    println!(
        "  log:               {}",
        dovecot.dir().join("dovecot.log").display()
    );
    println!();
    println!("Press Ctrl-C to stop.");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exited = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok::<_, std::io::Error>(None),
                _ = term.recv() => return Ok(None),
                _ = tick.tick() => {
                    if let Some(status) = dovecot.exited() {
                        return Ok(Some(status));
                    }
                }
            }
        }
    })?;
    if let Some(status) = exited {
        return Err(DemoError::Exited {
            status,
            log_tail: dovecot.log_tail(20),
        });
    }
    println!("stopping");
    dovecot.stop()?;
    Ok(())
}
