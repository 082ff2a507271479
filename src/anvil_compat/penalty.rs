//! The penalty table (anvil-protocol.md §5.2): per-ident auth failure penalties, a
//! 10-entry MRU of password checksums, a list ordered by last PENALTY-INC, and expiry by a
//! single timer that is not re-armed by PENALTY-SET-EXPIRE-SECS.
//!
//! Times: `now` is wall-clock unix milliseconds; every stored value is whole seconds
//! (`now / 1000`), as stock uses the event loop's cached second. Only the timer deadline
//! keeps milliseconds, because stock arms it in milliseconds.
//!
//! Records live in a slab (`recs`) linked into a doubly linked list, oldest PENALTY-INC
//! first, and are found through a hash table of slab indices hashed by ident bytes. The
//! table is small in practice (one record per client IP for `expire_secs`, 29 s under
//! stock auth), so records keep their ident in their own allocation.

use std::hash::BuildHasher;

use bstr::BString;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::UnixMillis;
use crate::wire::anvil::PenaltyRow;

/// Stock default expiry before auth sets 29 s.
pub const DEFAULT_EXPIRE_SECS: u32 = 3600;
/// Checksums remembered per record.
pub const CHECKSUM_MEMORY: usize = 10;
/// Largest `last_update` offset (15 bits).
pub const LAST_UPDATE_MAX: u32 = 32767;

const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Rec {
    ident: Box<[u8]>,
    penalty: u16,
    /// Unix seconds.
    last_penalty: u32,
    /// Seconds after `last_penalty` of the last PENALTY-INC, at most [`LAST_UPDATE_MAX`].
    last_update: u16,
    /// Most recently used first; `n_checksums` are valid.
    checksums: [u32; CHECKSUM_MEMORY],
    n_checksums: u8,
    /// Neighbours in the last-INC list (towards oldest / towards newest).
    older: u32,
    newer: u32,
}

impl Rec {
    /// Unix second of the record's last PENALTY-INC.
    fn last_inc(&self) -> i64 {
        i64::from(self.last_penalty) + i64::from(self.last_update)
    }
}

/// ident -> penalty record, plus the expiry timer.
#[derive(Debug)]
pub struct PenaltyTable {
    hasher: DefaultHashBuilder,
    index: HashTable<u32>,
    recs: Vec<Option<Rec>>,
    free: Vec<u32>,
    oldest: u32,
    newest: u32,
    expire_secs: u32,
    /// Deadline of the single expiry timer, if armed.
    timer: Option<UnixMillis>,
}

impl Default for PenaltyTable {
    fn default() -> Self {
        Self::new()
    }
}

impl PenaltyTable {
    /// An empty table with [`DEFAULT_EXPIRE_SECS`].
    pub fn new() -> Self {
        PenaltyTable {
            hasher: DefaultHashBuilder::default(),
            index: HashTable::new(),
            recs: Vec::new(),
            free: Vec::new(),
            oldest: NONE,
            newest: NONE,
            expire_secs: DEFAULT_EXPIRE_SECS,
            timer: None,
        }
    }

    fn rec(&self, i: u32) -> &Rec {
        self.recs[i as usize].as_ref().expect("linked penalty record exists")
    }

    fn rec_mut(&mut self, i: u32) -> &mut Rec {
        self.recs[i as usize].as_mut().expect("linked penalty record exists")
    }

    fn find(&self, hash: u64, ident: &[u8]) -> Option<u32> {
        let recs = &self.recs;
        self.index
            .find(hash, |&i| recs[i as usize].as_ref().is_some_and(|r| &*r.ident == ident))
            .copied()
    }

    /// The current expiry in seconds.
    pub fn expire_secs(&self) -> u32 {
        self.expire_secs
    }

    /// PENALTY-GET: `(penalty, last_penalty)`, `(0, 0)` when unknown. Expiry is not checked.
    pub fn get(&self, ident: &[u8]) -> (u32, u32) {
        match self.find(self.hasher.hash_one(ident), ident) {
            Some(i) => {
                let r = self.rec(i);
                (u32::from(r.penalty), r.last_penalty)
            }
            None => (0, 0),
        }
    }

    fn unlink(&mut self, i: u32) {
        let (older, newer) = {
            let r = self.rec(i);
            (r.older, r.newer)
        };
        if older == NONE {
            self.oldest = newer;
        } else {
            self.rec_mut(older).newer = newer;
        }
        if newer == NONE {
            self.newest = older;
        } else {
            self.rec_mut(newer).older = older;
        }
    }

    fn link_newest(&mut self, i: u32) {
        let prev = self.newest;
        {
            let r = self.rec_mut(i);
            r.older = prev;
            r.newer = NONE;
        }
        if prev == NONE {
            self.oldest = i;
        } else {
            self.rec_mut(prev).newer = i;
        }
        self.newest = i;
    }

    /// PENALTY-INC at wall-clock `now`; arms the expiry timer if none is armed.
    pub fn inc(&mut self, now: UnixMillis, ident: &[u8], checksum: u32, value: u16) {
        let now_s = (now / 1000) as u32;
        let h = self.hasher.hash_one(ident);
        let i = match self.find(h, ident) {
            Some(i) => {
                self.unlink(i);
                i
            }
            None => {
                let rec = Rec {
                    ident: ident.into(),
                    penalty: 0,
                    last_penalty: 0,
                    last_update: 0,
                    checksums: [0; CHECKSUM_MEMORY],
                    n_checksums: 0,
                    older: NONE,
                    newer: NONE,
                };
                let i = match self.free.pop() {
                    Some(i) => {
                        self.recs[i as usize] = Some(rec);
                        i
                    }
                    None => {
                        self.recs.push(Some(rec));
                        self.recs.len() as u32 - 1
                    }
                };
                let (recs, hasher) = (&self.recs, &self.hasher);
                self.index.insert_unique(h, i, |&j| {
                    recs[j as usize].as_ref().map_or(0, |r| hasher.hash_one(&*r.ident))
                });
                i
            }
        };
        let r = self.rec_mut(i);
        let n = usize::from(r.n_checksums);
        if checksum == 0 {
            // A reset (or a mechanism without a password): the checksums are kept.
            r.penalty = value;
            r.last_penalty = now_s;
        } else if let Some(pos) = r.checksums[..n].iter().position(|&c| c == checksum) {
            // The same wrong password again: do not raise the penalty, keep its time.
            r.checksums[..=pos].rotate_right(1);
            r.penalty = value.wrapping_sub(1);
        } else {
            let n = (n + 1).min(CHECKSUM_MEMORY);
            r.checksums[..n].rotate_right(1);
            r.checksums[0] = checksum;
            r.n_checksums = n as u8;
            r.penalty = value;
            r.last_penalty = now_s;
        }
        let d = i64::from(now_s) - i64::from(r.last_penalty);
        if d > i64::from(LAST_UPDATE_MAX) {
            r.last_update = LAST_UPDATE_MAX as u16;
            r.last_penalty = now_s - LAST_UPDATE_MAX;
        } else {
            // A clock that went backwards gives a negative offset; stock stores it in a
            // 15-bit field, which keeps the low 15 bits.
            r.last_update = (d & i64::from(LAST_UPDATE_MAX)) as u16;
        }
        self.link_newest(i);
        if self.timer.is_none() {
            self.timer = Some(now + UnixMillis::from(self.expire_secs.wrapping_mul(1000)));
        }
    }

    /// PENALTY-SET-EXPIRE-SECS; does not re-arm a pending timer.
    pub fn set_expire_secs(&mut self, secs: u32) {
        self.expire_secs = secs;
    }

    /// PENALTY-DUMP rows, oldest update first. `last_update` is the unix second of the
    /// record's last PENALTY-INC (`last_penalty + offset`), as the dump prints it.
    pub fn for_each(&self, mut row: impl FnMut(&PenaltyRow)) {
        let mut i = self.oldest;
        while i != NONE {
            let r = self.rec(i);
            row(&PenaltyRow {
                ident: BString::from(&*r.ident),
                penalty: u32::from(r.penalty),
                last_penalty: r.last_penalty,
                last_update: r.last_penalty.wrapping_add(u32::from(r.last_update)),
            });
            i = r.newer;
        }
    }

    /// When the armed expiry timer fires, if one is armed.
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        self.timer
    }

    /// Runs the expiry timer if its deadline is at or before `now` (purges, re-arms).
    pub fn on_timer(&mut self, now: UnixMillis) {
        match self.timer {
            Some(deadline) if deadline <= now => {}
            _ => return,
        }
        self.timer = None;
        let cutoff = (now / 1000) as i64 - i64::from(self.expire_secs);
        while self.oldest != NONE {
            let i = self.oldest;
            let last_inc = self.rec(i).last_inc();
            if last_inc > cutoff {
                // Stock passes the product as an unsigned 32-bit millisecond count.
                let ms = (last_inc - cutoff).wrapping_mul(1000) as u32;
                self.timer = Some(now + UnixMillis::from(ms));
                break;
            }
            self.remove(i);
        }
    }

    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let Some(rec) = self.recs[i as usize].take() else { return };
        let h = self.hasher.hash_one(&*rec.ident);
        if let Ok(e) = self.index.find_entry(h, |&j| j == i) {
            e.remove();
        }
        self.free.push(i);
        if self.index.is_empty() {
            self.recs = Vec::new();
            self.free = Vec::new();
            self.index = HashTable::new();
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
