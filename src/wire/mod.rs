//! Pure codecs over bytes: no I/O, no clocks. Each codec has known-answer tests, prefix
//! (Incomplete) tests, proptest round trips and a cargo-fuzz target under `fuzz/`.
//!
//! - [`escape`]: Dovecot's tab escaping (0x01 sequences) and field splitting.
//! - [`line`]: LF framing with the stock 1024-byte limit.
//! - [`anvil`]: anvil protocol v1 requests and replies.
//! - [`anvil_ext`]: Foreman's anvil extensions (process registry, claims).
//! - [`status`]: the 12-byte master status record.
//! - [`log`]: Dovecot's internal log-pipe line format.
//! - [`master_auth`]: the login -> post-login hand-off request (96 bytes + data) and reply.
//! - [`auth_master`]: the auth-master protocol (cookie -> user and userdb fields).
//! - [`imap_master`]: handing a client to a running imap process (imap-master).
//!
//! Design note: `docs/wire.md`.

pub mod anvil;
pub mod anvil_ext;
pub mod auth_master;
pub mod escape;
pub mod imap_master;
pub mod line;
pub mod log;
pub mod master_auth;
mod scan;
pub mod status;

/// Why a decoder could not produce a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError<E> {
    /// More bytes are needed; not an error.
    Incomplete,
    /// The bytes can never become a valid message.
    Invalid(E),
}
