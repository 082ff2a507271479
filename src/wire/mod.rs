//! Pure codecs over bytes: no I/O, no clocks. Each codec has known-answer tests, prefix
//! (Incomplete) tests, proptest round trips and a cargo-fuzz target under `fuzz/`.
//!
//! - [`escape`]: Dovecot's tab escaping (0x01 sequences) and field splitting.
//! - [`line`]: LF framing with the stock 1024-byte limit.
//! - [`anvil`]: anvil protocol v1 requests and replies.
//! - [`status`]: the 12-byte master status record.
//! - [`log`]: Dovecot's internal log-pipe line format.
//!
//! Design note: `docs/wire.md`.

pub mod anvil;
pub mod escape;
pub mod line;
pub mod log;
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
