//! The anvil: Dovecot 2.3's connect-limit and penalty service, byte-compatible with stock
//! 2.3.19.1 (`../shared/reference/anvil-protocol.md`), as synchronous state machines with a
//! thin tokio shell.
//!
//! - [`connect_limit`]: ident -> pid -> refcount (CONNECT, DISCONNECT, KILL, LOOKUP, dump).
//! - [`penalty`]: ident -> penalty record, the 10-checksum memory, expiry with a single timer.
//! - [`session`]: one connection's protocol: handshake (with the restart skip rule), framing,
//!   dispatch of each request to [`Anvil`], replies and log lines. Pure: bytes in, bytes out.
//! - [`server`]: the tokio shell: the fds a master gives anvil, or standalone sockets;
//!   timers; the status record; the log pipe.
//!
//! Time is passed in as wall-clock unix milliseconds ([`UnixMillis`]); nothing here reads a
//! clock except [`server`].
//!
//! `docs/anvil.md` describes the data structures, their memory per session, and where Foreman
//! deliberately differs from stock (pipes are never closed on bad input, no crashes).

pub mod connect_limit;
pub mod penalty;
pub mod server;
pub mod session;

pub use connect_limit::ConnectLimit;
pub use penalty::PenaltyTable;

/// Wall-clock time in milliseconds since the unix epoch.
pub type UnixMillis = u64;

/// Everything an anvil remembers: both tables. One per anvil process, shared by every
/// connection (sessions are not bound to the connection that reported them).
#[derive(Debug, Default)]
pub struct Anvil {
    pub connect_limit: ConnectLimit,
    pub penalty: PenaltyTable,
}

pub use session::{ConnKind, Fed, Session};

impl Anvil {
    /// Empty tables, default penalty expiry.
    pub fn new() -> Anvil {
        Anvil::default()
    }

    /// When the shell must call [`Anvil::on_timer`] next (the penalty expiry timer), if ever.
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        self.penalty.next_deadline()
    }

    /// Runs whatever timer is due at `now`. Call it after handling a batch of input, never in
    /// the middle of one (stock's 0 ms timer runs at the next event-loop pass).
    pub fn on_timer(&mut self, now: UnixMillis) {
        self.penalty.on_timer(now);
    }
}
