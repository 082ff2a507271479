//! One anvil connection's protocol as a pure state machine: bytes in, reply bytes and log
//! lines out, and whether the connection must be closed. The tokio shell ([`super::server`])
//! only moves bytes; every rule of anvil-protocol.md §1.8, §2 and §4 lives here.

use bstr::BString;

use super::{Anvil, UnixMillis};
use crate::wire::log::Level;

/// What kind of connection this is (anvil-protocol.md §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnKind {
    /// A pipe (no replies possible).
    pub fifo: bool,
    /// The master pipe (fd 7): the only connection allowed to send KILL.
    pub master: bool,
}

impl ConnKind {
    /// A socket client.
    pub const SOCKET: ConnKind = ConnKind { fifo: false, master: false };
    /// The shared children pipe (fd 8).
    pub const SHARED_PIPE: ConnKind = ConnKind { fifo: true, master: false };
    /// The master pipe (fd 7).
    pub const MASTER_PIPE: ConnKind = ConnKind { fifo: true, master: true };
}

/// Log lines produced while handling input, in order.
pub type LogBuf = Vec<(Level, BString)>;

/// Result of [`Session::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input consumed (complete lines handled); the shell keeps the rest.
    pub consumed: usize,
    /// The connection must be destroyed now (after flushing `out`).
    pub close: bool,
}

/// Per-connection protocol state.
#[derive(Debug)]
pub struct Session {
    kind: ConnKind,
    _todo: (),
}

impl Session {
    /// A new connection. `anvil_restarted` is `ANVIL_RESTARTED` from the environment: then a
    /// FIFO or master connection silently skips lines until the first valid VERSION line.
    pub fn new(kind: ConnKind, anvil_restarted: bool) -> Session {
        let _ = anvil_restarted;
        Session { kind, _todo: () }
    }

    /// The connection kind.
    pub fn kind(&self) -> ConnKind {
        self.kind
    }

    /// Handles every complete line at the start of `input` against `anvil` at time `now`,
    /// appending replies to `out` and log lines to `log`. Stops at the first error (logged,
    /// `close` set; later lines are not executed) or when only a partial line is left;
    /// a partial line of 1024 bytes or more is the "sent too much data" error.
    pub fn feed(
        &mut self,
        anvil: &mut Anvil,
        now: UnixMillis,
        input: &[u8],
        out: &mut Vec<u8>,
        log: &mut LogBuf,
    ) -> Fed {
        let _ = (anvil, now, input, out, log);
        todo!()
    }
}
