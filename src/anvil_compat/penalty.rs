//! The penalty table (anvil-protocol.md §5.2): per-ident auth failure penalties, a
//! 10-entry MRU of password checksums, a list ordered by last PENALTY-INC, and expiry by a
//! single timer that is not re-armed by PENALTY-SET-EXPIRE-SECS.

use super::UnixMillis;
use crate::wire::anvil::PenaltyRow;

/// Stock default expiry before auth sets 29 s.
pub const DEFAULT_EXPIRE_SECS: u32 = 3600;
/// Checksums remembered per record.
pub const CHECKSUM_MEMORY: usize = 10;
/// Largest `last_update` offset (15 bits).
pub const LAST_UPDATE_MAX: u32 = 32767;

/// ident -> penalty record, plus the expiry timer.
#[derive(Debug)]
pub struct PenaltyTable {
    _todo: (),
}

impl Default for PenaltyTable {
    fn default() -> Self {
        Self::new()
    }
}

impl PenaltyTable {
    /// An empty table with [`DEFAULT_EXPIRE_SECS`].
    pub fn new() -> Self {
        PenaltyTable { _todo: () }
    }

    /// PENALTY-GET: `(penalty, last_penalty)`, `(0, 0)` when unknown. Expiry is not checked.
    pub fn get(&self, ident: &[u8]) -> (u32, u32) {
        let _ = ident;
        todo!()
    }

    /// PENALTY-INC at wall-clock `now`; arms the expiry timer if none is armed.
    pub fn inc(&mut self, now: UnixMillis, ident: &[u8], checksum: u32, value: u16) {
        let _ = (now, ident, checksum, value);
        todo!()
    }

    /// PENALTY-SET-EXPIRE-SECS; does not re-arm a pending timer.
    pub fn set_expire_secs(&mut self, secs: u32) {
        let _ = secs;
        todo!()
    }

    /// PENALTY-DUMP rows, oldest update first.
    pub fn for_each(&self, mut row: impl FnMut(&PenaltyRow)) {
        let _ = &mut row;
        todo!()
    }

    /// When the armed expiry timer fires, if one is armed.
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        todo!()
    }

    /// Runs the expiry timer if its deadline is at or before `now` (purges, re-arms).
    pub fn on_timer(&mut self, now: UnixMillis) {
        let _ = now;
        todo!()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        todo!()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
