//! Foreman: a reimplementation of Dovecot 2.3's `anvil` and `master` processes,
//! wire-compatible with stock Dovecot 2.3.19.1, adding per-user worker reuse.
//!
//! # Layout
//!
//! Data flows down this list; nothing lower imports anything higher.
//!
//! - [`wire`]: pure codecs over bytes, no I/O. Tab escaping, line framing, the anvil v1
//!   requests and replies, the 12-byte master status record, the internal log line format.
//! - [`anvil_compat`]: the anvil. [`anvil_compat::connect_limit`] and [`anvil_compat::penalty`]
//!   are synchronous tables with time passed in; [`anvil_compat::session`] is the per-connection
//!   protocol state machine (handshake, framing, dispatch to the tables, replies and log lines);
//!   [`anvil_compat::server`] is the thin tokio shell that owns sockets, pipes and timers.
//!   [`anvil_compat::registry`] and [`anvil_compat::ext_session`] are Foreman's extension for
//!   per-user reuse (per-user process registry, atomic claims; docs/anvil-extensions.md).
//! - [`master_compat`]: what a Dovecot master gives its children ([`master_compat::child_env`]),
//!   the dovecot.conf loader ([`master_compat::config`], see docs/config.md), and the master
//!   ([`master_compat::supervisor`] core, [`master_compat::master`] shell, see docs/master.md).
//! - [`sys`]: the only module with `unsafe` and raw syscalls: inherited fds, fd placement,
//!   SCM_RIGHTS, privilege drop, and the master's one fork/exec ([`sys::process`]).
//! - [`logging`]: log lines in Dovecot's internal format on fd 2 under a master, plain text
//!   on stderr standalone.
//! - [`stock`]: runs a stock Dovecot 2.3 instance in a temporary directory (tests, benchmarks,
//!   the conformance recorder), plus tiny IMAP/POP3/anvil clients.
//! - [`who`]: `foreman who`, a linear-time `doveadm who`.
//! - [`bench`]: `foreman bench …`, side-by-side benchmarks against stock Dovecot.
//! - [`conformance`]: the anvil conformance suite (recorder, replayer, transcript format),
//!   source in `conformance/`.
//! - [`dispatch`]: the per-user reuse dispatcher after stock imap-login (docs/reuse.md).
//! - [`demo`]: `foreman demo`, the README's demo stack.
//! - [`sim`]: `foreman sim eviction`, trace-driven eviction policy simulation.
//! - [`cli`]: argument parsing for the `foreman` binary; `src/main.rs` only calls [`cli::main`].

pub mod anvil_compat;
pub mod bench;
pub mod cli;
#[path = "../conformance/mod.rs"]
pub mod conformance;
pub mod demo;
pub mod dispatch;
pub mod logging;
pub mod master_compat;
pub mod sim;
pub mod stock;
pub mod sys;
pub mod who;
pub mod wire;
