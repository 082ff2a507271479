//! The tokio shell around [`super::session`]: accepts socket clients, reads the master and
//! shared pipes, runs the penalty timer, writes status records to fd 5 and log lines to fd 2,
//! exits when the master-dead pipe (fd 6) reports an error and no socket client is left.
//! Runs either under a Dovecot master (fds of master-interface.md §5.1 / anvil-protocol.md
//! §1.2) or standalone on sockets it binds itself.

use std::path::PathBuf;

/// Standalone mode: no master, sockets bound by Foreman.
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    /// The main socket (`anvil`).
    pub socket: PathBuf,
    /// The auth penalty socket (`anvil-auth-penalty`), if wanted.
    pub penalty_socket: Option<PathBuf>,
}

/// Errors that stop the anvil server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not started by a Dovecot master: {0}")]
    NoMaster(String),
}

/// Runs a standalone anvil until SIGTERM / SIGINT.
pub fn run_standalone(opts: StandaloneOptions) -> Result<(), ServerError> {
    let _ = opts;
    todo!()
}

/// Runs as the anvil service of a Dovecot master (stock `dovecot` or `foreman master`).
pub fn run_under_master() -> Result<(), ServerError> {
    todo!()
}
