//! The anvil conformance suite: transcripts of everything that crosses an anvil's sockets and
//! pipes, recorded from stock Dovecot 2.3.19.1 and replayed against any anvil.
//!
//! - [`transcript`]: the versioned text format (parser and printer).
//! - [`normalise`]: what a recording turns into a marker (unix timestamps), and how a
//!   replayed reply line is matched against an expected one (markers, CONNECT-DUMP multisets).
//! - [`fake_master`]: starts an anvil binary the way a Dovecot master does (fds 0–10, env),
//!   owns its pipes and listening sockets, reads its status and log pipes.
//! - [`replay`]: drives the client side of transcripts against an anvil under a fake master
//!   and reports the first mismatch of each transcript as a readable diff.
//! - [`direct`]: records scripted protocol scenarios against the stock anvil binary under a
//!   fake master.
//! - [`proxy`]: `foreman conformance record-proxy`, run by a stock Dovecot master as its
//!   anvil executable: starts the real stock anvil behind itself and records every byte.
//!
//! `docs/conformance.md` describes the format and the workflow.

pub mod cli;
pub mod direct;
pub mod fake_master;
pub mod live;
pub mod normalise;
pub mod proxy;
pub mod replay;
pub mod scenarios;
pub mod transcript;
