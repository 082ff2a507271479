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
        self.recs[i as usize]
            .as_ref()
            .expect("linked penalty record exists")
    }

    fn rec_mut(&mut self, i: u32) -> &mut Rec {
        self.recs[i as usize]
            .as_mut()
            .expect("linked penalty record exists")
    }

    fn find(&self, hash: u64, ident: &[u8]) -> Option<u32> {
        let recs = &self.recs;
        self.index
            .find(hash, |&i| {
                recs[i as usize]
                    .as_ref()
                    .is_some_and(|r| &*r.ident == ident)
            })
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
                    recs[j as usize]
                        .as_ref()
                        .map_or(0, |r| hasher.hash_one(&*r.ident))
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
        let Some(rec) = self.recs[i as usize].take() else {
            return;
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix milliseconds of a whole second.
    fn at(secs: u64) -> UnixMillis {
        secs * 1000
    }

    fn dump(t: &PenaltyTable) -> Vec<(String, u32, u32, u32)> {
        let mut rows = Vec::new();
        t.for_each(|r| {
            rows.push((
                r.ident.to_string(),
                r.penalty,
                r.last_penalty,
                r.last_update,
            ))
        });
        rows
    }

    #[test]
    fn live_auth_sequence() {
        // anvil-protocol.md §6.3: wrong passwords x1, x1, x2, then the right one.
        let ip = b"127.0.0.1";
        let mut t = PenaltyTable::new();
        t.set_expire_secs(29);
        assert_eq!(t.get(ip), (0, 0));
        t.inc(at(1795892735), ip, 1818353248, 1);
        assert_eq!(t.get(ip), (1, 1795892735));
        t.inc(at(1795892741), ip, 1818353248, 2);
        assert_eq!(
            t.get(ip),
            (1, 1795892735),
            "same checksum: value - 1, time unchanged"
        );
        t.inc(at(1795892747), ip, 3941969102, 2);
        assert_eq!(t.get(ip), (2, 1795892747));
        t.inc(at(1795892750), ip, 0, 0);
        assert_eq!(t.get(ip), (0, 1795892750));
        // The reset kept the checksums: x1 is still known.
        t.inc(at(1795892751), ip, 1818353248, 1);
        assert_eq!(t.get(ip), (0, 1795892750));
    }

    #[test]
    fn live_p6_dump_rows() {
        let mut t = PenaltyTable::new();
        t.inc(at(1795892932), b"pA", 0, 2);
        t.inc(at(1795892942), b"pD", 5, 1);
        t.inc(at(1795892943), b"pD", 5, 1);
        assert_eq!(
            dump(&t),
            [
                ("pA".into(), 2, 1795892932, 1795892932),
                ("pD".into(), 0, 1795892942, 1795892943)
            ]
        );
    }

    #[test]
    fn dump_order_follows_the_last_inc() {
        let mut t = PenaltyTable::new();
        t.inc(at(10), b"a", 0, 1);
        t.inc(at(11), b"b", 0, 1);
        t.inc(at(12), b"c", 0, 1);
        t.inc(at(13), b"a", 0, 1);
        let order: Vec<String> = dump(&t).into_iter().map(|r| r.0).collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn checksum_memory_is_an_mru_of_ten() {
        let mut t = PenaltyTable::new();
        for cs in 1..=10 {
            t.inc(at(100), b"x", cs, 3);
        }
        // Touch 1: it becomes most recent, so the 11th evicts 2 (the least recently used).
        t.inc(at(101), b"x", 1, 3);
        assert_eq!(t.get(b"x"), (2, 100));
        t.inc(at(102), b"x", 11, 5);
        assert_eq!(t.get(b"x"), (5, 102));
        t.inc(at(103), b"x", 1, 5);
        assert_eq!(t.get(b"x"), (4, 102), "1 is remembered");
        for cs in 3..=11 {
            t.inc(at(104), b"x", cs, 7);
            assert_eq!(t.get(b"x"), (6, 102), "checksum {cs} is remembered");
        }
        t.inc(at(105), b"x", 2, 7);
        assert_eq!(t.get(b"x"), (7, 105), "2 was evicted: new checksum");
        // Now 2 is in and the least recently used (1) fell out.
        t.inc(at(106), b"x", 1, 9);
        assert_eq!(t.get(b"x"), (9, 106));
    }

    #[test]
    fn zero_checksum_sets_value_and_keeps_checksums() {
        let mut t = PenaltyTable::new();
        t.inc(at(50), b"x", 77, 3);
        t.inc(at(60), b"x", 0, 4);
        assert_eq!(t.get(b"x"), (4, 60));
        t.inc(at(61), b"x", 77, 1);
        assert_eq!(t.get(b"x"), (0, 60), "77 still known: value - 1, time kept");
        assert_eq!(dump(&t), [("x".into(), 0, 60, 61)]);
    }

    #[test]
    fn last_update_saturates_at_15_bits() {
        let mut t = PenaltyTable::new();
        t.inc(at(1_000_000), b"x", 9, 3);
        t.inc(at(1_000_000 + 32767), b"x", 9, 3);
        assert_eq!(t.get(b"x"), (2, 1_000_000), "an offset of 32767 still fits");
        assert_eq!(dump(&t)[0].3, 1_000_000 + 32767);
        t.inc(at(1_000_000 + 40_000), b"x", 9, 3);
        // last_penalty is moved forward so that last_penalty + 32767 = now.
        assert_eq!(t.get(b"x"), (2, 1_000_000 + 40_000 - 32767));
        assert_eq!(
            dump(&t),
            [(
                "x".into(),
                2,
                1_000_000 + 40_000 - 32767,
                1_000_000 + 40_000
            )]
        );
    }

    #[test]
    fn expiry_deletes_old_records_and_rearms_for_the_next() {
        let mut t = PenaltyTable::new();
        t.set_expire_secs(29);
        assert_eq!(t.next_deadline(), None);
        t.inc(1_000_500, b"a", 0, 1);
        assert_eq!(t.next_deadline(), Some(1_000_500 + 29_000));
        t.inc(at(1010), b"b", 0, 1);
        assert_eq!(t.next_deadline(), Some(1_029_500), "an armed timer is kept");
        t.on_timer(1_029_499);
        assert_eq!(t.len(), 2, "not due yet");
        t.on_timer(1_029_500);
        // cutoff = 1029 - 29 = 1000: a (last INC 1000) goes, b (1010) stays; 10 s re-arm.
        assert_eq!(dump(&t).len(), 1);
        assert_eq!(t.get(b"a"), (0, 0));
        assert_eq!(t.next_deadline(), Some(1_029_500 + 10_000));
        t.on_timer(1_039_500);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None, "an empty list arms nothing");
    }

    #[test]
    fn expiry_counts_from_the_last_inc_not_last_penalty() {
        let mut t = PenaltyTable::new();
        t.set_expire_secs(10);
        t.inc(at(100), b"a", 5, 2);
        t.inc(at(108), b"a", 5, 2);
        t.on_timer(at(110));
        assert_eq!(
            t.get(b"a"),
            (1, 100),
            "last INC at 108 is newer than the cutoff 100"
        );
        assert_eq!(t.next_deadline(), Some(at(110) + 8_000));
        t.on_timer(at(118));
        assert!(t.is_empty());
    }

    #[test]
    fn set_expire_secs_does_not_rearm() {
        // §5.2: a 12 s timer armed; setting 2 s and adding a record leaves that record until
        // the 12 s timer fires; then both go at once.
        let mut t = PenaltyTable::new();
        t.set_expire_secs(12);
        t.inc(at(500), b"old", 0, 1);
        t.set_expire_secs(2);
        t.inc(at(503), b"new", 0, 1);
        assert_eq!(t.next_deadline(), Some(at(512)));
        t.on_timer(at(506));
        assert_eq!(t.len(), 2, "the 12 s timer has not fired");
        t.on_timer(at(512));
        assert!(t.is_empty(), "cutoff uses the current expire_secs: 510");
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn zero_expiry_arms_a_zero_ms_timer() {
        let mut t = PenaltyTable::new();
        t.set_expire_secs(0);
        t.inc(1_234_567, b"x", 0, 1);
        assert_eq!(t.next_deadline(), Some(1_234_567));
        assert_eq!(t.get(b"x"), (1, 1234), "visible until the timer runs");
        t.on_timer(1_234_567);
        assert!(t.is_empty());
    }

    #[test]
    fn timer_product_wraps_at_32_bits() {
        let mut t = PenaltyTable::new();
        t.set_expire_secs(4_294_968); // * 1000 = 2^32 + 704
        t.inc(at(1), b"x", 0, 1);
        assert_eq!(t.next_deadline(), Some(at(1) + 704));
        // When it fires nothing is old enough: re-armed for the remaining time.
        t.on_timer(at(1) + 704);
        assert_eq!(t.len(), 1);
        assert!(t.next_deadline().is_some());
    }

    #[test]
    fn records_are_reused_after_expiry() {
        let mut t = PenaltyTable::new();
        t.set_expire_secs(1);
        for round in 0..3u64 {
            for i in 0..50 {
                t.inc(
                    at(100 * round + 10),
                    format!("10.0.0.{i}").as_bytes(),
                    i + 1,
                    2,
                );
            }
            assert_eq!(t.len(), 50);
            t.on_timer(at(100 * round + 11));
            assert!(t.is_empty());
        }
    }
}
