//! The connect-limit table (anvil-protocol.md §5.1): how many sessions each ident has, per
//! pid. `count[ident]` is the sum of `ref[(ident, pid)]` and both are kept only while > 0.
//! No expiry, no size limit; only DISCONNECT, KILL or a restart remove sessions.

use crate::wire::anvil::Pid;

/// DISCONNECT for an (ident, pid) pair that has no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("disconnection for unknown pid")]
pub struct UnknownSession;

/// ident -> pid -> refcount.
#[derive(Debug, Default)]
pub struct ConnectLimit {
    _todo: (),
}

impl ConnectLimit {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// CONNECT: one more session of `ident` in `pid`.
    pub fn connect(&mut self, pid: Pid, ident: &[u8]) {
        let _ = (pid, ident);
        todo!()
    }

    /// DISCONNECT: one session less; `Err` when (ident, pid) has none.
    pub fn disconnect(&mut self, pid: Pid, ident: &[u8]) -> Result<(), UnknownSession> {
        let _ = (pid, ident);
        todo!()
    }

    /// KILL: removes every session of `pid`; returns how many sessions were removed.
    pub fn kill(&mut self, pid: Pid) -> u64 {
        let _ = pid;
        todo!()
    }

    /// LOOKUP: the total number of sessions of `ident` over all pids.
    pub fn lookup(&self, ident: &[u8]) -> u32 {
        let _ = ident;
        todo!()
    }

    /// CONNECT-DUMP: calls `row(ident, pid, refcount)` once per (ident, pid) pair.
    pub fn for_each(&self, mut row: impl FnMut(&[u8], Pid, u32)) {
        let _ = &mut row;
        todo!()
    }

    /// Number of (ident, pid) pairs.
    pub fn pairs(&self) -> usize {
        todo!()
    }
}
