//! The master side of Dovecot 2.3, and what it hands to its children. Read `docs/master.md`.
//!
//! - [`child_env`]: the environment and fd layout a service process gets from a master
//!   (master-interface.md §5), parsed once and validated.
//! - [`config`]: the dovecot.conf (2.3 syntax) loader and the typed settings the master uses.
//! - [`services`]: the settings resolved into what the master runs (argv, limits, listeners,
//!   `RESTRICT_*`) and each child's environment.
//! - [`supervisor`]: the master's synchronous core (events in, actions out, time passed in).
//! - [`listeners`]: creating shared UNIX/FIFO/TCP listeners.
//! - [`control`]: the `$BASE/master` control protocol (`doveadm service/process status`,
//!   Foreman's `FOREMAN-NEED`).
//! - [`registry_client`]: the master's foreman-anvil connection (process registry reports,
//!   `EVICT`).
//! - [`syslog`]: the master's own lines to syslog (`log_path = syslog`).
//! - [`master`]: `foreman master`, the poll-loop shell that owns fds and children and runs the
//!   supervisor's actions (fork/exec lives in `crate::sys::process`).

pub mod child_env;
pub mod config;
pub mod control;
pub mod listeners;
pub mod master;
pub mod registry_client;
pub mod services;
pub mod supervisor;
pub mod syslog;
