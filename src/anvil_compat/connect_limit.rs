//! The connect-limit table (anvil-protocol.md §5.1): how many sessions each ident has, per
//! pid. `count[ident]` is the sum of `ref[(ident, pid)]` and both are kept only while > 0.
//! No expiry, no size limit; only DISCONNECT, KILL or a restart remove sessions.
//!
//! # Layout (why it is shaped like this)
//!
//! The table is built to hold a million sessions in well under half of stock's ~150 bytes
//! per session, with O(1) CONNECT / DISCONNECT / LOOKUP and a KILL that touches only the
//! killed pid's entries. See `docs/anvil.md` for the figures.
//!
//! - **Idents are interned** to `u32` ids. Their bytes live in an `Arena` of 64 KiB chunks
//!   (no per-ident allocation, no allocator rounding; freed bytes are reused by the next
//!   ident of the same length); an `IdentSlot` (16 bytes, in a chunked `Slab`) holds where
//!   the bytes are, plus the sessions:
//!   - *single*: the ident has sessions in exactly one pid: `(pid, refcount)` inline. This
//!     is the common case (one imap process per session) and costs no further memory.
//!   - *multi*: the ident has had several pids at once: only the total count inline; each
//!     pair's refcount is stored on the pid side (below), so an ident with a million pids
//!     needs no per-ident map at all. A multi ident stays multi until its count reaches 0.
//! - `ident_index` is a hash table of ident ids hashed by the ident bytes (4 bytes a bucket).
//! - **pid -> idents index** for KILL and for the dump-free DISCONNECT bookkeeping:
//!   `pid_index` is a hash table of `u32` entries hashed by pid. An entry is either
//!   - *direct*: an ident id whose slot is *single* with this pid, and the pid has no other
//!     ident (the pid is read from the slot, so the entry is 4 bytes); or
//!   - `FLAG | r`: a `PidRec` `{pid, list, refs}` (12 bytes, in a chunked `Slab`) where
//!     `list` is one ident id with the pair's refcount in `refs`, or `FLAG | l`, a
//!     `SmallMap` ident id -> refcount in the `pid_lists` pool (a vector up to 16 idents, a
//!     hash table above). A refcount stored on the pid side is meaningful only for a multi
//!     ident; a single ident's refcount is its slot's count.
//!
//! - Hashing is the table's own seeded folded-multiply hash (`Hasher`); each operation
//!   hashes its ident once and probes each index once. Tables and buffers follow the load
//!   with hysteresis, so sessions coming and going do not allocate.
//!
//! Invariant kept by every operation: a direct entry `i` for pid `p` exists only while slot
//! `i` is single with pid `p`; a slot is never changed away from that state (or freed)
//! before its direct entry is converted or removed, because the index resolves a direct
//! entry's pid through the slot.

use std::hash::BuildHasher as _;

use hashbrown::hash_table::{Entry, OccupiedEntry};
use hashbrown::HashTable;

use crate::wire::anvil::Pid;

/// DISCONNECT for an (ident, pid) pair that has no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("disconnection for unknown pid")]
pub struct UnknownSession;

/// Tag bit: in a slot's `a` (multi), in a pid index entry (record), in a record's list (set).
/// Pids are at most 2^31 - 1, so the bit is free in a pid.
const FLAG: u32 = 1 << 31;
/// "No index" (end of a free list, vacant marker).
const NONE: u32 = u32::MAX;

// ---------------------------------------------------------------------------------------
// Hashing.

/// The table's hash functions, seeded at random per table.
///
/// Short byte strings and single integers are all the table hashes, so a few folded 64x64
/// multiplications (the full 128-bit product's halves XORed) beat a general-purpose
/// `Hasher` several times over: an ident of up to 16 bytes costs two multiplications, a
/// pid two. Both halves of the result are well mixed, as hashbrown needs (it indexes with
/// the low bits and tags with the top 7). The random seed keeps an ident's bucket
/// unpredictable to whoever picks user names.
#[derive(Debug, Clone, Copy)]
struct Hasher {
    seed: [u64; 3],
}

impl Default for Hasher {
    fn default() -> Self {
        let state = std::collections::hash_map::RandomState::new();
        Hasher {
            seed: [
                state.hash_one(1u8),
                state.hash_one(2u8),
                state.hash_one(3u8),
            ],
        }
    }
}

/// The 128-bit product of `a` and `b`, its halves XORed.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn read8(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[inline(always)]
fn read4(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(
        b[at..at + 4].try_into().expect("4 bytes"),
    ))
}

/// Odd constants with well spread bits (digits of pi).
const MIX: [u64; 3] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7345,
    0xa409_3822_299f_31d1,
];

impl Hasher {
    /// Hash of an ident.
    #[inline(always)]
    fn bytes(&self, b: &[u8]) -> u64 {
        let [s0, s1, s2] = self.seed;
        let len = b.len();
        let mut h = s2 ^ (len as u64).wrapping_mul(MIX[0]);
        let (x, y) = if len > 16 && len <= 32 {
            // The common ident length: the loop below, unrolled.
            h = fold_mul(read8(b, 0) ^ s0 ^ h, read8(b, 8) ^ s1);
            (read8(b, len - 16), read8(b, len - 8))
        } else if len > 16 {
            // 16 bytes a round; the last round overlaps the previous one.
            let mut at = 0;
            while at + 16 < len {
                h = fold_mul(read8(b, at) ^ s0 ^ h, read8(b, at + 8) ^ s1);
                at += 16;
            }
            (read8(b, len - 16), read8(b, len - 8))
        } else if len >= 8 {
            (read8(b, 0), read8(b, len - 8))
        } else if len >= 4 {
            (read4(b, 0), read4(b, len - 4))
        } else if len > 0 {
            let three = u64::from(b[0]) | u64::from(b[len / 2]) << 8 | u64::from(b[len - 1]) << 16;
            (three, 0)
        } else {
            (0, 0)
        };
        h = fold_mul(x ^ s0 ^ h, y ^ s1);
        fold_mul(h ^ MIX[1], MIX[2])
    }

    /// Hash of a pid or an ident id.
    #[inline(always)]
    fn int(&self, k: u32) -> u64 {
        // One round leaves the low bits poorly mixed for keys that differ only in high bits.
        fold_mul(
            fold_mul(u64::from(k) ^ self.seed[0], MIX[1] ^ self.seed[1]),
            MIX[2],
        )
    }
}

/// Hash tables up to this capacity are never shrunk (a few KiB at most).
const SMALL_TABLE: usize = 1024;

// ---------------------------------------------------------------------------------------
// Chunked slab with a free list: stable u32 ids, no doubling waste.

const SLAB_CHUNK_SHIFT: u32 = 10;
const SLAB_CHUNK: usize = 1 << SLAB_CHUNK_SHIFT;

/// An item that can mark itself vacant and carry the free-list link.
trait SlabItem: Copy + Default {
    fn vacant(next: u32) -> Self;
    /// `Some(next)` when vacant.
    fn next_vacant(&self) -> Option<u32>;
}

#[derive(Debug)]
struct Slab<T> {
    /// Fixed-size chunks: an index masked to the chunk size needs no bounds check.
    chunks: Vec<Box<[T; SLAB_CHUNK]>>,
    len: u32,
    free: u32,
    live: u32,
}

impl<T: SlabItem> Default for Slab<T> {
    fn default() -> Self {
        Slab::new()
    }
}

impl<T: SlabItem> Slab<T> {
    fn new() -> Self {
        Slab {
            chunks: Vec::new(),
            len: 0,
            free: NONE,
            live: 0,
        }
    }

    #[inline]
    fn get(&self, i: u32) -> &T {
        &self.chunks[(i >> SLAB_CHUNK_SHIFT) as usize][i as usize & (SLAB_CHUNK - 1)]
    }

    #[inline]
    fn get_mut(&mut self, i: u32) -> &mut T {
        &mut self.chunks[(i >> SLAB_CHUNK_SHIFT) as usize][i as usize & (SLAB_CHUNK - 1)]
    }

    #[inline]
    fn insert(&mut self, v: T) -> u32 {
        self.live += 1;
        if self.free != NONE {
            let i = self.free;
            self.free = self.get(i).next_vacant().unwrap_or(NONE);
            *self.get_mut(i) = v;
            return i;
        }
        let i = self.len;
        if (i as usize).is_multiple_of(SLAB_CHUNK) {
            self.chunks.push(Box::new([T::default(); SLAB_CHUNK]));
        }
        self.len += 1;
        *self.get_mut(i) = v;
        i
    }

    #[inline]
    fn remove(&mut self, i: u32) -> T {
        let v = *self.get(i);
        *self.get_mut(i) = T::vacant(self.free);
        self.free = i;
        self.live -= 1;
        v
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        (0..self.len)
            .map(|i| (i, self.get(i)))
            .filter(|(_, v)| v.next_vacant().is_none())
    }

    fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Box<[T; SLAB_CHUNK]>>()
            + self.chunks.len() * SLAB_CHUNK * std::mem::size_of::<T>()
    }
}

// ---------------------------------------------------------------------------------------
// Ident bytes.

/// Chunk size of the ident arena; small idents are packed into such chunks.
const ARENA_CHUNK: usize = 64 * 1024;
/// Idents at least this long get a chunk of their own (never from the wire: lines are
/// at most 1024 bytes, but the API takes any slice).
const BIG_IDENT: usize = 4096;
/// `len` marker of an ident that owns its whole chunk.
const BIG_LEN: u16 = u16::MAX;

/// Where an ident's bytes are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Loc {
    chunk: u32,
    pos: u16,
    len: u16,
}

/// Bump allocator for ident bytes, with a free list per length: a freed ident's bytes are
/// reused by the next ident of the same length (sessions come and go with idents of a few
/// typical lengths). The list link lives in the freed bytes themselves, so idents shorter
/// than [`LINK`] bytes are not listed. Bytes neither live nor reused yet are garbage; the
/// owner compacts (copies every live ident into fresh chunks) once garbage exceeds the live
/// bytes.
#[derive(Debug, Default)]
struct Arena {
    chunks: Vec<Vec<u8>>,
    /// The chunk small idents are appended to.
    cur: Option<u32>,
    /// `free[len]`: where the last freed ident of `len` bytes is (`chunk << 16 | pos`,
    /// `NO_FREE`: none); its first [`LINK`] bytes hold the next one.
    free: Vec<u32>,
    live: usize,
    garbage: usize,
}

/// Bytes of a free-list link.
const LINK: usize = 4;
/// Empty free list.
const NO_FREE: u32 = u32::MAX;
/// Free lists are made for lengths up to at least this at once.
const FREE_LISTS: usize = 128;

impl Arena {
    #[inline]
    fn alloc(&mut self, bytes: &[u8]) -> Loc {
        let len = bytes.len();
        self.live += len;
        if len == 0 {
            return Loc::default();
        }
        if len >= BIG_IDENT {
            self.chunks.push(bytes.to_vec());
            return Loc {
                chunk: self.chunks.len() as u32 - 1,
                pos: 0,
                len: BIG_LEN,
            };
        }
        if let Some(&head) = self.free.get(len) {
            if head != NO_FREE {
                let (chunk, pos) = (head >> 16, head as u16);
                let slot = &mut self.chunks[chunk as usize][pos as usize..][..len];
                self.free[len] = u32::from_le_bytes([slot[0], slot[1], slot[2], slot[3]]);
                slot.copy_from_slice(bytes);
                self.garbage -= len;
                return Loc {
                    chunk,
                    pos,
                    len: len as u16,
                };
            }
        }
        let cur = match self.cur {
            Some(c) if self.chunks[c as usize].len() + len <= ARENA_CHUNK => c,
            _ => {
                self.chunks.push(Vec::with_capacity(ARENA_CHUNK));
                let c = self.chunks.len() as u32 - 1;
                self.cur = Some(c);
                c
            }
        };
        let chunk = &mut self.chunks[cur as usize];
        let pos = chunk.len();
        chunk.extend_from_slice(bytes);
        // pos < ARENA_CHUNK - len < 65536 because len >= 1.
        Loc {
            chunk: cur,
            pos: pos as u16,
            len: len as u16,
        }
    }

    #[inline]
    fn get(&self, loc: Loc) -> &[u8] {
        if loc.len == BIG_LEN {
            &self.chunks[loc.chunk as usize]
        } else if loc.len == 0 {
            &[]
        } else {
            let pos = loc.pos as usize;
            &self.chunks[loc.chunk as usize][pos..pos + loc.len as usize]
        }
    }

    #[inline]
    fn free(&mut self, loc: Loc) {
        if loc.len == BIG_LEN {
            let len = std::mem::take(&mut self.chunks[loc.chunk as usize]).len();
            self.live -= len;
            self.garbage += len;
            return;
        }
        let len = loc.len as usize;
        self.live -= len;
        self.garbage += len.max(1);
        // Chunks past 65535 (4 GiB of idents) cannot be linked; their bytes stay garbage.
        if len >= LINK && loc.chunk < 1 << 16 {
            if len >= self.free.len() {
                self.free.resize((len + 1).max(FREE_LISTS), NO_FREE);
            }
            let slot = &mut self.chunks[loc.chunk as usize][loc.pos as usize..][..len];
            slot[..LINK].copy_from_slice(&self.free[len].to_le_bytes());
            self.free[len] = loc.chunk << 16 | u32::from(loc.pos);
        }
    }

    /// Forgets every ident (none is live), keeping the first chunk if it is a regular one.
    fn reset(&mut self) {
        self.chunks.truncate(1);
        if self
            .chunks
            .first()
            .is_some_and(|c| c.capacity() != ARENA_CHUNK)
        {
            self.chunks.clear();
        }
        if let Some(c) = self.chunks.first_mut() {
            c.clear();
        }
        self.cur = self.chunks.first().map(|_| 0);
        self.free.clear();
        self.live = 0;
        self.garbage = 0;
    }

    fn wants_compaction(&self) -> bool {
        self.garbage > self.live && self.garbage >= ARENA_CHUNK
    }

    fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.chunks.iter().map(Vec::capacity).sum::<usize>()
            + self.free.capacity() * 4
    }
}

// ---------------------------------------------------------------------------------------
// Small maps keyed by u32: a vector while small, a hash table when big.

const SMALL_MAX: usize = 16;

#[derive(Debug)]
enum SmallMap<V> {
    Small(Vec<(u32, V)>),
    Big(HashTable<(u32, V)>),
}

impl<V> Default for SmallMap<V> {
    fn default() -> Self {
        SmallMap::Small(Vec::new())
    }
}

impl<V: Copy> SmallMap<V> {
    fn pair(a: (u32, V), b: (u32, V)) -> Self {
        SmallMap::Small(vec![a, b])
    }

    fn len(&self) -> usize {
        match self {
            SmallMap::Small(v) => v.len(),
            SmallMap::Big(t) => t.len(),
        }
    }

    fn get_mut(&mut self, s: &Hasher, k: u32) -> Option<&mut V> {
        match self {
            SmallMap::Small(v) => v.iter_mut().find(|e| e.0 == k).map(|e| &mut e.1),
            SmallMap::Big(t) => t.find_mut(s.int(k), |e| e.0 == k).map(|e| &mut e.1),
        }
    }

    /// Inserts a key that is not present.
    fn insert_new(&mut self, s: &Hasher, k: u32, val: V) {
        match self {
            SmallMap::Small(v) if v.len() < SMALL_MAX => v.push((k, val)),
            SmallMap::Small(v) => {
                let mut t = HashTable::with_capacity(SMALL_MAX * 2);
                for e in v.drain(..).chain(std::iter::once((k, val))) {
                    t.insert_unique(s.int(e.0), e, |e| s.int(e.0));
                }
                *self = SmallMap::Big(t);
            }
            SmallMap::Big(t) => {
                t.insert_unique(s.int(k), (k, val), |e| s.int(e.0));
            }
        }
    }

    fn remove(&mut self, s: &Hasher, k: u32) -> Option<V> {
        match self {
            SmallMap::Small(v) => {
                let i = v.iter().position(|e| e.0 == k)?;
                Some(v.swap_remove(i).1)
            }
            SmallMap::Big(t) => {
                let ((_, val), _) = t.find_entry(s.int(k), |e| e.0 == k).ok()?.remove();
                if t.len() <= SMALL_MAX / 2 {
                    *self = SmallMap::Small(t.drain().collect());
                } else if t.len() * 4 < t.capacity() {
                    let keep = t.len() * 2;
                    t.shrink_to(keep, |e| s.int(e.0));
                }
                Some(val)
            }
        }
    }

    fn first(&self) -> Option<(u32, V)> {
        match self {
            SmallMap::Small(v) => v.first().copied(),
            SmallMap::Big(t) => t.iter().next().copied(),
        }
    }

    fn for_each(&self, mut f: impl FnMut(u32, V)) {
        match self {
            SmallMap::Small(v) => v.iter().for_each(|e| f(e.0, e.1)),
            SmallMap::Big(t) => t.iter().for_each(|e| f(e.0, e.1)),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            SmallMap::Small(v) => v.capacity() * std::mem::size_of::<(u32, V)>(),
            SmallMap::Big(t) => t.allocation_size(),
        }
    }
}

/// A vector of values with reusable indices (the rare multi-pid / multi-ident lists).
#[derive(Debug)]
struct Pool<T> {
    items: Vec<T>,
    free: Vec<u32>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T: Default> Pool<T> {
    fn insert(&mut self, v: T) -> u32 {
        if let Some(i) = self.free.pop() {
            self.items[i as usize] = v;
            i
        } else {
            self.items.push(v);
            self.items.len() as u32 - 1
        }
    }

    fn take(&mut self, i: u32) -> T {
        let v = std::mem::take(&mut self.items[i as usize]);
        self.free.push(i);
        if self.free.len() == self.items.len() {
            *self = Pool::default();
        }
        v
    }

    fn get(&self, i: u32) -> &T {
        &self.items[i as usize]
    }

    fn get_mut(&mut self, i: u32) -> &mut T {
        &mut self.items[i as usize]
    }
}

// ---------------------------------------------------------------------------------------
// The table.

/// One interned ident (16 bytes).
///
/// - vacant: `loc.chunk == NONE`, `a` = next free slot;
/// - single: `a` = pid (no FLAG), `b` = refcount = count;
/// - multi: `a` = `FLAG`, `b` = count; the per-pid refcounts are on the pid side (each pid's
///   `PidRec`). A multi ident stays multi until its count reaches 0, even when it is back to
///   one pid (it does not know which pid that is).
#[derive(Debug, Clone, Copy, Default)]
struct IdentSlot {
    loc: Loc,
    a: u32,
    b: u32,
}

impl SlabItem for IdentSlot {
    fn vacant(next: u32) -> Self {
        IdentSlot {
            loc: Loc {
                chunk: NONE,
                pos: 0,
                len: 0,
            },
            a: next,
            b: 0,
        }
    }
    fn next_vacant(&self) -> Option<u32> {
        (self.loc.chunk == NONE).then_some(self.a)
    }
}

/// A pid whose idents cannot be a direct index entry (12 bytes). `list`: an ident id, or
/// `FLAG | index into pid_lists` (a map ident id -> refcount). `refs`: the refcount of the
/// pair (`list`, `pid`) when `list` is one multi ident. A refcount stored on the pid side
/// is meaningful only for a multi ident: a single ident's refcount is its slot's count.
/// Vacant: `pid == NONE`, `list` = next free.
#[derive(Debug, Clone, Copy, Default)]
struct PidRec {
    pid: u32,
    list: u32,
    refs: u32,
}

impl SlabItem for PidRec {
    fn vacant(next: u32) -> Self {
        PidRec {
            pid: NONE,
            list: next,
            refs: 0,
        }
    }
    fn next_vacant(&self) -> Option<u32> {
        (self.pid == NONE).then_some(self.list)
    }
}

/// ident -> pid -> refcount, with a pid -> idents index for KILL.
#[derive(Debug, Default)]
pub struct ConnectLimit {
    hasher: Hasher,
    slots: Slab<IdentSlot>,
    arena: Arena,
    /// Ident ids, hashed by ident bytes.
    ident_index: HashTable<u32>,
    pid_recs: Slab<PidRec>,
    /// Direct ident ids or `FLAG | pid_recs index`, hashed by pid.
    pid_index: HashTable<u32>,
    /// ident id -> refcount maps of pids with several idents.
    pid_lists: Pool<SmallMap<u32>>,
    pairs: usize,
}

#[inline(always)]
fn ident_bytes<'a>(slots: &Slab<IdentSlot>, arena: &'a Arena, id: u32) -> &'a [u8] {
    arena.get(slots.get(id).loc)
}

/// The pid a pid-index entry belongs to.
#[inline(always)]
fn entry_pid(slots: &Slab<IdentSlot>, recs: &Slab<PidRec>, e: u32) -> u32 {
    if e & FLAG == 0 {
        slots.get(e).a
    } else {
        recs.get(e & !FLAG).pid
    }
}

/// Adds the new pair (`id`, `p`) with refcount `refs` (stored for a multi ident only) to
/// pid `p`'s existing index entry `e` (the pid has other idents).
#[cold]
fn add_to_pid_entry(
    e: &mut u32,
    p: u32,
    id: u32,
    refs: u32,
    recs: &mut Slab<PidRec>,
    lists: &mut Pool<SmallMap<u32>>,
    hasher: &Hasher,
) {
    if *e & FLAG == 0 {
        // Direct entry for another (single) ident: the pid now needs a record with a map.
        let li = lists.insert(SmallMap::pair((*e, 0), (id, refs)));
        *e = FLAG
            | recs.insert(PidRec {
                pid: p,
                list: FLAG | li,
                refs: 0,
            });
    } else {
        let rec = recs.get_mut(*e & !FLAG);
        if rec.list & FLAG == 0 {
            let li = lists.insert(SmallMap::pair((rec.list, rec.refs), (id, refs)));
            rec.list = FLAG | li;
            rec.refs = 0;
        } else {
            lists.get_mut(rec.list & !FLAG).insert_new(hasher, id, refs);
        }
    }
}

/// Removes the pair (`id`, the entry's pid) from a pid's record entry.
fn remove_from_pid_entry(
    entry: OccupiedEntry<'_, u32>,
    id: u32,
    recs: &mut Slab<PidRec>,
    lists: &mut Pool<SmallMap<u32>>,
    hasher: &Hasher,
) {
    let r = *entry.get() & !FLAG;
    let rec = *recs.get(r);
    if rec.list & FLAG == 0 {
        entry.remove();
        recs.remove(r);
    } else {
        remove_from_list(recs.get_mut(r), id, lists, hasher);
    }
}

/// Removes ident `id` from a record's map; a map left with one ident becomes that ident.
#[cold]
fn remove_from_list(rec: &mut PidRec, id: u32, lists: &mut Pool<SmallMap<u32>>, hasher: &Hasher) {
    let li = rec.list & !FLAG;
    let set = lists.get_mut(li);
    set.remove(hasher, id);
    if set.len() == 1 {
        let (only, refs) = set.first().unwrap_or((NONE, 0));
        lists.take(li);
        rec.list = only;
        rec.refs = refs;
    }
}

/// The refcount pid-side of the pair (`id`, the entry's pid), `id` a multi ident, if the
/// pair exists.
#[inline]
fn multi_refs<'a>(
    e: u32,
    id: u32,
    recs: &'a mut Slab<PidRec>,
    lists: &'a mut Pool<SmallMap<u32>>,
    hasher: &Hasher,
) -> Option<&'a mut u32> {
    if e & FLAG == 0 {
        // A direct entry is for a single ident, never for the multi `id`.
        return None;
    }
    let rec = recs.get_mut(e & !FLAG);
    if rec.list & FLAG == 0 {
        (rec.list == id).then_some(&mut rec.refs)
    } else {
        lists.get_mut(rec.list & !FLAG).get_mut(hasher, id)
    }
}

/// Shrinks a hash table that has become mostly empty (hashbrown never shrinks by itself).
/// Hysteresis: a table shrinks to half load only below a quarter load, and never below
/// [`SMALL_TABLE`] entries, so that sessions coming and going do not reallocate it.
#[inline(always)]
fn maybe_shrink(t: &mut HashTable<u32>, hasher: impl Fn(&u32) -> u64) {
    if t.capacity() > SMALL_TABLE && t.len() * 4 < t.capacity() {
        shrink(t, hasher);
    }
}

#[cold]
fn shrink(t: &mut HashTable<u32>, hasher: impl Fn(&u32) -> u64) {
    let keep = t.len() * 2;
    t.shrink_to(keep, hasher);
}

impl ConnectLimit {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn find_ident(&self, hash: u64, ident: &[u8]) -> Option<u32> {
        let (slots, arena) = (&self.slots, &self.arena);
        self.ident_index
            .find(hash, |&id| ident_bytes(slots, arena, id) == ident)
            .copied()
    }

    /// CONNECT: one more session of `ident` in `pid`.
    pub fn connect(&mut self, pid: Pid, ident: &[u8]) {
        let p = pid.get();
        let h = self.hasher.bytes(ident);
        // One probe finds the ident or the place for it.
        let (slots, arena, hasher) = (&self.slots, &self.arena, self.hasher);
        let id = match self.ident_index.entry(
            h,
            |&id| ident_bytes(slots, arena, id) == ident,
            |&id| hasher.bytes(ident_bytes(slots, arena, id)),
        ) {
            Entry::Occupied(found) => *found.get(),
            Entry::Vacant(place) => {
                let loc = self.arena.alloc(ident);
                let id = self.slots.insert(IdentSlot { loc, a: p, b: 1 });
                place.insert(id);
                self.pairs += 1;
                self.add_ident_to_pid(p, id);
                return;
            }
        };
        let slot = *self.slots.get(id);
        if slot.a & FLAG == 0 {
            if slot.a == p {
                self.slots.get_mut(id).b = slot.b.wrapping_add(1);
                return;
            }
            // A second pid: the ident becomes multi, its refcounts move to the pid side.
            // The old pid's direct entry resolves its pid through this slot, so convert it
            // first.
            self.make_multi(slot.a, id, slot.b);
            let s = self.slots.get_mut(id);
            s.a = FLAG;
        }
        let s = self.slots.get_mut(id);
        s.b = s.b.wrapping_add(1);
        self.add_multi_session(p, id);
    }

    /// One more session of the pair (`id`, `p`), `id` a multi ident: the refcount lives in
    /// pid `p`'s record.
    #[inline]
    fn add_multi_session(&mut self, p: u32, id: u32) {
        let hp = self.hasher.int(p);
        let (slots, recs, hasher) = (&self.slots, &self.pid_recs, self.hasher);
        match self.pid_index.entry(
            hp,
            |&e| entry_pid(slots, recs, e) == p,
            |&e| hasher.int(entry_pid(slots, recs, e)),
        ) {
            Entry::Vacant(place) => {
                let r = self.pid_recs.insert(PidRec {
                    pid: p,
                    list: id,
                    refs: 1,
                });
                place.insert(FLAG | r);
            }
            Entry::Occupied(found) => {
                let e = found.into_mut();
                if let Some(r) = multi_refs(
                    *e,
                    id,
                    &mut self.pid_recs,
                    &mut self.pid_lists,
                    &self.hasher,
                ) {
                    *r = r.wrapping_add(1);
                    return;
                }
                add_to_pid_entry(
                    e,
                    p,
                    id,
                    1,
                    &mut self.pid_recs,
                    &mut self.pid_lists,
                    &self.hasher,
                );
            }
        }
        self.pairs += 1;
    }

    /// Records the new pair (`id`, `p`) in the pid index, `id` an ident just created for
    /// this pair (so it is single with pid `p`).
    #[inline]
    fn add_ident_to_pid(&mut self, p: u32, id: u32) {
        let hp = self.hasher.int(p);
        let (slots, recs, hasher) = (&self.slots, &self.pid_recs, self.hasher);
        match self.pid_index.entry(
            hp,
            |&e| entry_pid(slots, recs, e) == p,
            |&e| hasher.int(entry_pid(slots, recs, e)),
        ) {
            // A new pid whose ident has only this pid (the common case): a direct entry.
            Entry::Vacant(place) => {
                place.insert(id);
            }
            Entry::Occupied(found) => add_to_pid_entry(
                found.into_mut(),
                p,
                id,
                0,
                &mut self.pid_recs,
                &mut self.pid_lists,
                &self.hasher,
            ),
        }
    }

    /// Slot `id`, single with pid `q` and `refs` sessions, is about to become multi: stores
    /// the pair's refcount in pid `q`'s entry, turning a direct entry into a record (a
    /// direct entry resolves its pid through the slot).
    #[cold]
    fn make_multi(&mut self, q: u32, id: u32, refs: u32) {
        let hq = self.hasher.int(q);
        let (slots, recs) = (&self.slots, &self.pid_recs);
        let Some(e) = self
            .pid_index
            .find_mut(hq, |&e| entry_pid(slots, recs, e) == q)
        else {
            debug_assert!(false, "pid {q} missing from the pid index");
            return;
        };
        if *e & FLAG == 0 {
            *e = FLAG
                | self.pid_recs.insert(PidRec {
                    pid: q,
                    list: id,
                    refs,
                });
        } else if let Some(r) = multi_refs(
            *e,
            id,
            &mut self.pid_recs,
            &mut self.pid_lists,
            &self.hasher,
        ) {
            *r = refs;
        }
    }

    /// Removes ident `id` from pid `p`'s index entry (the pair is gone).
    #[inline]
    fn remove_ident_from_pid(&mut self, p: u32, id: u32) {
        let hp = self.hasher.int(p);
        let (slots, recs) = (&self.slots, &self.pid_recs);
        let Ok(entry) = self
            .pid_index
            .find_entry(hp, |&e| entry_pid(slots, recs, e) == p)
        else {
            debug_assert!(false, "pid {p} missing from the pid index");
            return;
        };
        if *entry.get() & FLAG == 0 {
            // A direct entry: the pid's only ident.
            entry.remove();
        } else {
            remove_from_pid_entry(
                entry,
                id,
                &mut self.pid_recs,
                &mut self.pid_lists,
                &self.hasher,
            );
        }
        self.shrink_pid_index();
    }

    #[inline]
    fn shrink_pid_index(&mut self) {
        let (slots, recs, hasher) = (&self.slots, &self.pid_recs, &self.hasher);
        maybe_shrink(&mut self.pid_index, |&e| {
            hasher.int(entry_pid(slots, recs, e))
        });
    }

    /// Frees an ident whose count reached 0 (no pid refers to it any more).
    /// `hash`: the ident's hash when the caller has it.
    fn free_ident(&mut self, id: u32, hash: Option<u64>) {
        let h =
            hash.unwrap_or_else(|| self.hasher.bytes(ident_bytes(&self.slots, &self.arena, id)));
        if let Ok(entry) = self.ident_index.find_entry(h, |&x| x == id) {
            entry.remove();
        }
        self.release_ident(id);
    }

    /// Frees slot `id` and its bytes; the ident index no longer refers to it.
    #[inline]
    fn release_ident(&mut self, id: u32) {
        let slot = self.slots.remove(id);
        self.arena.free(slot.loc);
        if self.slots.live == 0 {
            self.on_empty();
        } else if self.arena.wants_compaction() {
            self.compact_arena();
        }
        let (slots, arena, hasher) = (&self.slots, &self.arena, &self.hasher);
        maybe_shrink(&mut self.ident_index, |&i| {
            hasher.bytes(ident_bytes(slots, arena, i))
        });
    }

    /// The last ident is gone. A table that was big gives all its memory back; a small one
    /// keeps its (empty) buffers, so that a table going 0 -> 1 -> 0 sessions allocates nothing.
    #[inline]
    fn on_empty(&mut self) {
        // Small: at most one slab chunk of idents (so the ident index is small too), one
        // of pid records and a small pid index.
        let small = self.slots.chunks.len() <= 1
            && self.pid_recs.chunks.len() <= 1
            && self.pid_index.capacity() <= SMALL_TABLE;
        if !small {
            self.release_all();
        } else if self.arena.chunks.len() > 1 || self.arena.garbage >= ARENA_CHUNK {
            // Freed bytes not reused (odd lengths) add up: start the arena afresh.
            self.arena.reset();
        }
    }

    #[cold]
    fn release_all(&mut self) {
        self.slots = Slab::new();
        self.pid_recs = Slab::new();
        self.arena = Arena::default();
        self.ident_index = HashTable::new();
        self.pid_index = HashTable::new();
    }

    /// Copies every live ident into fresh chunks (amortised: runs after at least as many
    /// bytes were freed as are live).
    fn compact_arena(&mut self) {
        let mut old = std::mem::take(&mut self.arena);
        for i in 0..self.slots.len {
            let slot = self.slots.get_mut(i);
            if slot.next_vacant().is_some() {
                continue;
            }
            slot.loc = if slot.loc.len == BIG_LEN {
                let bytes = std::mem::take(&mut old.chunks[slot.loc.chunk as usize]);
                self.arena.live += bytes.len();
                self.arena.chunks.push(bytes);
                Loc {
                    chunk: self.arena.chunks.len() as u32 - 1,
                    pos: 0,
                    len: BIG_LEN,
                }
            } else {
                self.arena.alloc(old.get(slot.loc))
            };
        }
    }

    /// Deletes a pair of ident `id` (`refs`: its refcount if `id` is multi) and frees or
    /// updates the ident; returns the pair's refcount. The pid index is the caller's business.
    fn drop_pair(&mut self, id: u32, refs: u32) -> u32 {
        let slot = *self.slots.get(id);
        self.pairs -= 1;
        let refs = if slot.a & FLAG == 0 { slot.b } else { refs };
        let count = slot.b.wrapping_sub(refs);
        if count == 0 {
            self.free_ident(id, None);
        } else {
            self.slots.get_mut(id).b = count;
        }
        refs
    }

    /// DISCONNECT: one session less; `Err` when (ident, pid) has none.
    pub fn disconnect(&mut self, pid: Pid, ident: &[u8]) -> Result<(), UnknownSession> {
        let p = pid.get();
        let h = self.hasher.bytes(ident);
        let (slots, arena) = (&self.slots, &self.arena);
        let found = self
            .ident_index
            .find_entry(h, |&id| ident_bytes(slots, arena, id) == ident)
            .map_err(|_| UnknownSession)?;
        let id = *found.get();
        let slot = *self.slots.get(id);
        if slot.a & FLAG == 0 {
            if slot.a != p {
                return Err(UnknownSession);
            }
            if slot.b > 1 {
                self.slots.get_mut(id).b -= 1;
                return Ok(());
            }
            // The ident's last session (the common case): drop the index entry just found,
            // then the pid's entry while the slot still resolves it, then the slot.
            found.remove();
            self.remove_ident_from_pid(p, id);
            self.pairs -= 1;
            self.release_ident(id);
            return Ok(());
        }
        // A multi ident: the pair's refcount is in pid `p`'s record.
        let hp = self.hasher.int(p);
        let (slots, recs) = (&self.slots, &self.pid_recs);
        let entry = self
            .pid_index
            .find_entry(hp, |&e| entry_pid(slots, recs, e) == p)
            .map_err(|_| UnknownSession)?;
        let e = *entry.get();
        let r = multi_refs(e, id, &mut self.pid_recs, &mut self.pid_lists, &self.hasher)
            .ok_or(UnknownSession)?;
        *r -= 1;
        if *r == 0 {
            remove_from_pid_entry(
                entry,
                id,
                &mut self.pid_recs,
                &mut self.pid_lists,
                &self.hasher,
            );
            self.pairs -= 1;
        }
        let count = slot.b - 1;
        if count == 0 {
            found.remove();
            self.release_ident(id);
        } else {
            self.slots.get_mut(id).b = count;
        }
        self.shrink_pid_index();
        Ok(())
    }

    /// KILL: removes every session of `pid`; returns how many sessions were removed.
    pub fn kill(&mut self, pid: Pid) -> u64 {
        let p = pid.get();
        let hp = self.hasher.int(p);
        let (slots, recs) = (&self.slots, &self.pid_recs);
        let Ok(entry) = self
            .pid_index
            .find_entry(hp, |&e| entry_pid(slots, recs, e) == p)
        else {
            return 0;
        };
        let (e, _) = entry.remove();
        let mut removed = 0u64;
        if e & FLAG == 0 {
            removed += u64::from(self.drop_pair(e, 0));
        } else {
            let rec = self.pid_recs.remove(e & !FLAG);
            if rec.list & FLAG == 0 {
                removed += u64::from(self.drop_pair(rec.list, rec.refs));
            } else {
                let set = self.pid_lists.take(rec.list & !FLAG);
                set.for_each(|id, refs| removed += u64::from(self.drop_pair(id, refs)));
            }
        }
        self.shrink_pid_index();
        removed
    }

    /// LOOKUP: the total number of sessions of `ident` over all pids.
    pub fn lookup(&self, ident: &[u8]) -> u32 {
        let h = self.hasher.bytes(ident);
        self.find_ident(h, ident)
            .map_or(0, |id| self.slots.get(id).b)
    }

    /// CONNECT-DUMP: calls `row(ident, pid, refcount)` once per (ident, pid) pair.
    pub fn for_each(&self, mut row: impl FnMut(&[u8], Pid, u32)) {
        for (_, slot) in self.slots.iter() {
            let ident = self.arena.get(slot.loc);
            if slot.a & FLAG == 0 {
                if let Some(pid) = Pid::new(slot.a) {
                    row(ident, pid, slot.b);
                }
            }
        }
        // Multi idents' pairs are on the pid side.
        let mut multi_row = |id: u32, p: u32, refs: u32| {
            let slot = self.slots.get(id);
            if slot.a & FLAG != 0 {
                if let Some(pid) = Pid::new(p) {
                    row(self.arena.get(slot.loc), pid, refs);
                }
            }
        };
        for &e in self.pid_index.iter() {
            if e & FLAG == 0 {
                continue;
            }
            let rec = self.pid_recs.get(e & !FLAG);
            if rec.list & FLAG == 0 {
                multi_row(rec.list, rec.pid, rec.refs);
            } else {
                self.pid_lists
                    .get(rec.list & !FLAG)
                    .for_each(|id, refs| multi_row(id, rec.pid, refs));
            }
        }
    }

    /// Number of (ident, pid) pairs.
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// Number of distinct idents with sessions.
    pub fn idents(&self) -> usize {
        self.ident_index.len()
    }

    /// Number of distinct pids with sessions.
    pub fn pids(&self) -> usize {
        self.pid_index.len()
    }

    /// An estimate of the heap bytes this table holds (allocation sizes, without the
    /// allocator's own per-block overhead). `tests/anvil_memory.rs` measures the real figure.
    pub fn memory_bytes(&self) -> usize {
        let lists = |p: &Pool<SmallMap<u32>>| {
            p.items.capacity() * std::mem::size_of::<SmallMap<u32>>()
                + p.items.iter().map(SmallMap::heap_bytes).sum::<usize>()
                + p.free.capacity() * 4
        };
        self.slots.heap_bytes()
            + self.arena.heap_bytes()
            + self.ident_index.allocation_size()
            + self.pid_recs.heap_bytes()
            + self.pid_index.allocation_size()
            + lists(&self.pid_lists)
    }

    /// Checks the internal invariants (tests): every index entry resolves, counts add up.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let mut singles = 0usize;
        // Multi ident id -> (sum of its pid-side refcounts, number of pids).
        let mut multi: std::collections::HashMap<u32, (u32, usize)> = Default::default();
        for (id, slot) in self.slots.iter() {
            let ident = self.arena.get(slot.loc);
            assert_eq!(self.find_ident(self.hasher.bytes(ident), ident), Some(id));
            assert!(slot.b > 0);
            if slot.a & FLAG == 0 {
                singles += 1;
            } else {
                assert_eq!(slot.a, FLAG);
                multi.insert(id, (0, 0));
            }
        }
        assert_eq!(self.slots.live as usize, self.ident_index.len());
        // Every pid index entry: each of its idents has a pair with that pid; multi idents'
        // refcounts add up to their counts.
        let mut pid_pairs = 0usize;
        let mut single_pairs = 0usize;
        for &e in self.pid_index.iter() {
            let p = entry_pid(&self.slots, &self.pid_recs, e);
            let mut has = |id: u32, refs: u32| {
                let s = self.slots.get(id);
                assert!(s.next_vacant().is_none());
                if s.a & FLAG == 0 {
                    assert_eq!(s.a, p);
                    single_pairs += 1;
                } else {
                    assert!(refs > 0);
                    let m = multi.get_mut(&id).expect("a multi ident");
                    m.0 += refs;
                    m.1 += 1;
                }
            };
            if e & FLAG == 0 {
                assert_eq!(
                    self.slots.get(e).a & FLAG,
                    0,
                    "direct entry to a multi ident"
                );
                has(e, 0);
                pid_pairs += 1;
            } else {
                let rec = self.pid_recs.get(e & !FLAG);
                if rec.list & FLAG == 0 {
                    has(rec.list, rec.refs);
                    pid_pairs += 1;
                } else {
                    let set = self.pid_lists.get(rec.list & !FLAG);
                    assert!(set.len() >= 2);
                    set.for_each(&mut has);
                    pid_pairs += set.len();
                }
            }
        }
        assert_eq!(single_pairs, singles);
        for (id, (sum, pids)) in &multi {
            assert_eq!(*sum, self.slots.get(*id).b, "multi ident {id}");
            assert!(*pids >= 1);
        }
        assert_eq!(pid_pairs, self.pairs);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn pid(p: u32) -> Pid {
        Pid::new(p).unwrap()
    }

    fn dump(t: &ConnectLimit) -> Vec<(Vec<u8>, u32, u32)> {
        let mut rows = Vec::new();
        t.for_each(|i, p, r| rows.push((i.to_vec(), p.get(), r)));
        rows.sort();
        rows
    }

    fn rows(r: &[(&str, u32, u32)]) -> Vec<(Vec<u8>, u32, u32)> {
        let mut v: Vec<_> = r
            .iter()
            .map(|&(i, p, n)| (i.as_bytes().to_vec(), p, n))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn live_c1_example_dump() {
        let mut t = ConnectLimit::new();
        t.connect(pid(4242), b"test/1.2.3.4/u");
        t.connect(pid(4242), b"test/1.2.3.4/u");
        t.connect(pid(4343), b"test/1.2.3.4/u");
        t.connect(pid(4343), b"other/u2");
        t.check_invariants();
        assert_eq!(t.lookup(b"test/1.2.3.4/u"), 3);
        assert_eq!(t.lookup(b"other/u2"), 1);
        assert_eq!(t.lookup(b"TEST/1.2.3.4/u"), 0, "idents are case-sensitive");
        assert_eq!(t.pairs(), 3);
        assert_eq!(
            dump(&t),
            rows(&[
                ("test/1.2.3.4/u", 4242, 2),
                ("other/u2", 4343, 1),
                ("test/1.2.3.4/u", 4343, 1)
            ])
        );
    }

    #[test]
    fn disconnect_needs_the_exact_pair() {
        let mut t = ConnectLimit::new();
        t.connect(pid(1), b"imap/1.1.1.1/a");
        assert_eq!(t.disconnect(pid(2), b"imap/1.1.1.1/a"), Err(UnknownSession));
        assert_eq!(t.disconnect(pid(1), b"imap/1.1.1.1/b"), Err(UnknownSession));
        assert_eq!(t.lookup(b"imap/1.1.1.1/a"), 1);
        assert_eq!(t.disconnect(pid(1), b"imap/1.1.1.1/a"), Ok(()));
        assert_eq!(t.disconnect(pid(1), b"imap/1.1.1.1/a"), Err(UnknownSession));
        assert_eq!(t.lookup(b"imap/1.1.1.1/a"), 0);
        assert_eq!(t.pairs(), 0);
        assert!(dump(&t).is_empty());
        t.check_invariants();
    }

    #[test]
    fn empty_ident_and_pid_extremes() {
        let mut t = ConnectLimit::new();
        t.connect(pid(0), b"");
        t.connect(pid(Pid::MAX), b"");
        assert_eq!(t.lookup(b""), 2);
        assert_eq!(dump(&t), rows(&[("", 0, 1), ("", Pid::MAX, 1)]));
        assert_eq!(t.kill(pid(Pid::MAX)), 1);
        assert_eq!(dump(&t), rows(&[("", 0, 1)]));
        t.check_invariants();
    }

    #[test]
    fn kill_removes_every_ident_of_the_pid_only() {
        let mut t = ConnectLimit::new();
        t.connect(pid(7), b"a");
        t.connect(pid(7), b"a");
        t.connect(pid(7), b"b");
        t.connect(pid(8), b"b");
        t.connect(pid(8), b"c");
        t.connect(pid(9), b"c");
        t.check_invariants();
        assert_eq!(t.kill(pid(7)), 3);
        t.check_invariants();
        assert_eq!(dump(&t), rows(&[("b", 8, 1), ("c", 8, 1), ("c", 9, 1)]));
        assert_eq!(t.kill(pid(7)), 0, "a second KILL finds nothing");
        assert_eq!(t.kill(pid(12345)), 0);
        // After KILL the pairs are unknown to DISCONNECT.
        assert_eq!(t.disconnect(pid(7), b"b"), Err(UnknownSession));
        assert_eq!(t.kill(pid(8)), 2);
        assert_eq!(dump(&t), rows(&[("c", 9, 1)]));
        // A new session of a killed pid is counted afresh.
        t.connect(pid(7), b"c");
        assert_eq!(t.lookup(b"c"), 2);
        t.check_invariants();
    }

    #[test]
    fn one_ident_with_many_pids_and_one_pid_with_many_idents() {
        let mut t = ConnectLimit::new();
        for p in 0..100 {
            t.connect(pid(p), b"imap/10.0.0.1/bob");
        }
        for i in 0..100 {
            t.connect(pid(5000), format!("imap/10.0.0.{i}/hib").as_bytes());
        }
        t.check_invariants();
        assert_eq!(t.lookup(b"imap/10.0.0.1/bob"), 100);
        assert_eq!(t.pairs(), 200);
        for p in 0..98 {
            t.disconnect(pid(p), b"imap/10.0.0.1/bob").unwrap();
            t.check_invariants();
        }
        assert_eq!(
            dump(&t)
                .iter()
                .filter(|r| r.0 == b"imap/10.0.0.1/bob")
                .count(),
            2
        );
        assert_eq!(t.kill(pid(5000)), 100);
        t.check_invariants();
        assert_eq!(
            dump(&t),
            rows(&[("imap/10.0.0.1/bob", 98, 1), ("imap/10.0.0.1/bob", 99, 1)])
        );
    }

    #[test]
    fn a_multi_ident_back_to_one_pid_keeps_its_refcounts_on_the_pid_side() {
        let mut t = ConnectLimit::new();
        let bob = b"pop3/10.0.0.2/bob";
        // bob: 3 sessions in pid 7 (single), then pid 8 makes it multi.
        for _ in 0..3 {
            t.connect(pid(7), bob);
        }
        t.connect(pid(7), b"imap/10.0.0.2/eve");
        t.connect(pid(8), bob);
        t.connect(pid(8), bob);
        t.check_invariants();
        assert_eq!(
            dump(&t),
            rows(&[
                ("pop3/10.0.0.2/bob", 7, 3),
                ("pop3/10.0.0.2/bob", 8, 2),
                ("imap/10.0.0.2/eve", 7, 1),
            ])
        );
        // Back to one pid: the refcount stays exact, the pair is still found by pid.
        assert_eq!(t.kill(pid(8)), 2);
        t.check_invariants();
        assert_eq!(t.lookup(bob), 3);
        assert_eq!(t.disconnect(pid(8), bob), Err(UnknownSession));
        t.disconnect(pid(7), bob).unwrap();
        t.connect(pid(9), bob);
        t.check_invariants();
        assert_eq!(
            dump(&t),
            rows(&[
                ("pop3/10.0.0.2/bob", 7, 2),
                ("pop3/10.0.0.2/bob", 9, 1),
                ("imap/10.0.0.2/eve", 7, 1),
            ])
        );
        // pid 7 holds a map {bob: 2, eve: -}; KILL counts eve from its slot.
        assert_eq!(t.kill(pid(7)), 3);
        t.disconnect(pid(9), bob).unwrap();
        t.check_invariants();
        assert_eq!((t.pairs(), t.idents(), t.pids()), (0, 0, 0));
        assert_eq!(t.lookup(bob), 0);
    }

    #[test]
    fn arena_compaction_keeps_every_ident() {
        let mut t = ConnectLimit::new();
        let ident = |i: u32| format!("imap/10.{}.{}.{}/user{i}", i >> 16, (i >> 8) & 255, i & 255);
        for i in 0..20_000 {
            t.connect(pid(i), ident(i).as_bytes());
        }
        for i in 0..20_000 {
            if i % 10 != 0 {
                t.disconnect(pid(i), ident(i).as_bytes()).unwrap();
            }
        }
        assert!(
            t.arena.garbage <= t.arena.live.max(ARENA_CHUNK),
            "compaction ran"
        );
        t.check_invariants();
        for i in 0..20_000 {
            assert_eq!(t.lookup(ident(i).as_bytes()), u32::from(i % 10 == 0));
        }
        // A long ident gets its own chunk and survives compaction too.
        let long = vec![b'x'; 5000];
        t.connect(pid(1), &long);
        for i in (0..20_000).step_by(10) {
            t.kill(pid(i));
        }
        assert_eq!(t.lookup(&long), 1);
        t.check_invariants();
        t.kill(pid(1));
        assert_eq!(t.pairs(), 0);
        assert_eq!(t.memory_bytes(), 0, "an empty table gives its memory back");
    }

    /// hashbrown indexes with a hash's low bits and tags with its top 7: both must look
    /// random for similar idents and consecutive pids (a weak hash shows here as many
    /// collisions, and in the profile as long probe sequences).
    #[test]
    fn hashes_spread_low_and_top_bits() {
        let h = Hasher::default();
        let check = |hashes: Vec<u64>| {
            let n = hashes.len();
            let mut low = vec![false; n];
            let mut tags = [0usize; 128];
            for x in &hashes {
                low[*x as usize % n] = true;
                tags[(*x >> 57) as usize] += 1;
            }
            // n keys into n buckets: a random function fills 1 - 1/e of them (more is
            // better: consecutive pids may fill almost all).
            let filled = low.iter().filter(|&&b| b).count() as f64 / n as f64;
            assert!(filled > 0.6, "low bits fill {filled:.3}");
            let mean = n / 128;
            for t in tags {
                assert!(
                    t > mean * 2 / 3 && t < mean * 3 / 2,
                    "tag count {t}, mean {mean}"
                );
            }
        };
        let n = 1 << 16;
        check((0..n).map(|i| h.int(i)).collect());
        check((0..n).map(|i| h.int(i << 16)).collect());
        // Idents that differ in their last (or first) 4 bytes only, at every read width.
        let prefix = b"imap/10.0.0.1/user-with-a-long-name/x";
        for len in [4usize, 5, 7, 8, 9, 15, 16, 17, 24, 33, 40] {
            let at_end = |i: u32| [&prefix[..len - 4], &i.to_le_bytes()[..]].concat();
            let at_start = |i: u32| [&i.to_be_bytes()[..], &prefix[..len - 4]].concat();
            check((0..n).map(|i| h.bytes(&at_end(i))).collect());
            check((0..n).map(|i| h.bytes(&at_start(i))).collect());
        }
        // Only the length tells empty from NULs, and the seed separates tables.
        assert_ne!(h.bytes(b""), h.bytes(b"\0"));
        assert_ne!(h.bytes(b"\0"), h.bytes(b"\0\0"));
        assert_ne!(h.bytes(b"abc"), Hasher::default().bytes(b"abc"));
    }

    #[test]
    fn sessions_coming_and_going_reuse_the_buffers() {
        let mut t = ConnectLimit::new();
        let ident = |i: u32| format!("imap/10.0.0.1/user{i}");
        t.connect(pid(1), ident(0).as_bytes());
        t.disconnect(pid(1), ident(0).as_bytes()).unwrap();
        let kept = t.memory_bytes();
        assert!(kept > 0, "a small empty table keeps its buffers");
        for i in 1..10_000 {
            t.connect(pid(1000 + i), ident(i).as_bytes());
            t.disconnect(pid(1000 + i), ident(i).as_bytes()).unwrap();
            assert_eq!(t.memory_bytes(), kept, "pair {i} changed the allocation");
        }
        t.check_invariants();
        assert_eq!(t.lookup(ident(5).as_bytes()), 0);
        // With other sessions present, a freed ident's bytes are reused by the next ident
        // of the same length.
        for i in 0..100 {
            t.connect(pid(i), format!("pop3/{i}").as_bytes());
        }
        let arena = t.arena.heap_bytes();
        let mut most = 0;
        for i in 10_000..40_000 {
            t.connect(pid(1000 + i), ident(i).as_bytes());
            t.disconnect(pid(1000 + i), ident(i).as_bytes()).unwrap();
            assert_eq!(t.arena.heap_bytes(), arena, "pair {i} grew the arena");
            // The index tables may grow once (hashbrown's tombstones), then stay.
            if i == 20_000 {
                most = t.memory_bytes();
            }
            assert!(
                i < 20_000 || t.memory_bytes() == most,
                "pair {i} changed the allocation"
            );
        }
        t.check_invariants();
        assert_eq!(t.pairs(), 100);
    }

    #[test]
    fn a_big_table_emptied_by_disconnect_gives_its_memory_back() {
        let mut t = ConnectLimit::new();
        let ident = |i: u32| format!("imap/10.0.0.1/user{i}");
        for i in 0..5000 {
            t.connect(pid(i), ident(i).as_bytes());
        }
        for i in 0..5000 {
            t.disconnect(pid(i), ident(i).as_bytes()).unwrap();
        }
        t.check_invariants();
        assert_eq!(t.memory_bytes(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Connect(u32, usize),
        Disconnect(u32, usize),
        Kill(u32),
    }

    fn idents() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = (0..24)
            .map(|i| format!("imap/127.0.0.1/u{i}").into_bytes())
            .collect();
        v.push(Vec::new());
        v.push(vec![b'L'; 4100]);
        v.push(b"a\tb\x01c".to_vec());
        v
    }

    /// Random operations over `idents` idents (indices into [`idents()`]) and `pids` pids
    /// (plus the largest pid).
    fn op(idents: usize, pids: u32) -> impl Strategy<Value = Op> {
        let p = prop_oneof![0u32..pids, Just(Pid::MAX)];
        let i = 0usize..idents;
        prop_oneof![
            5 => (p.clone(), i.clone()).prop_map(|(p, i)| Op::Connect(p, i)),
            4 => (p.clone(), i).prop_map(|(p, i)| Op::Disconnect(p, i)),
            1 => p.prop_map(Op::Kill),
        ]
    }

    fn check_against_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let names = idents();
        let mut t = ConnectLimit::new();
        // The model: ref[(ident, pid)] only; count is derived from it.
        let mut refs: HashMap<(usize, u32), u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Connect(p, i) => {
                    t.connect(pid(p), &names[i]);
                    *refs.entry((i, p)).or_default() += 1;
                }
                Op::Disconnect(p, i) => {
                    let got = t.disconnect(pid(p), &names[i]);
                    match refs.get_mut(&(i, p)) {
                        Some(r) => {
                            prop_assert_eq!(got, Ok(()));
                            *r -= 1;
                            if *r == 0 {
                                refs.remove(&(i, p));
                            }
                        }
                        None => prop_assert_eq!(got, Err(UnknownSession)),
                    }
                }
                Op::Kill(p) => {
                    let expected: u32 = refs.iter().filter(|(k, _)| k.1 == p).map(|(_, r)| r).sum();
                    refs.retain(|k, _| k.1 != p);
                    prop_assert_eq!(t.kill(pid(p)), u64::from(expected));
                }
            }
            t.check_invariants();
            for (i, name) in names.iter().enumerate() {
                let count: u32 = refs.iter().filter(|(k, _)| k.0 == i).map(|(_, r)| r).sum();
                prop_assert_eq!(t.lookup(name), count);
            }
            let mut want: Vec<_> = refs
                .iter()
                .map(|(&(i, p), &r)| (names[i].clone(), p, r))
                .collect();
            want.sort();
            let got = dump(&t);
            // LOOKUP agrees with the dump: count[i] = sum over the dump rows of i.
            for name in &names {
                let sum: u32 = got.iter().filter(|r| &r.0 == name).map(|r| r.2).sum();
                prop_assert_eq!(sum, t.lookup(name));
            }
            prop_assert_eq!(got, want);
            prop_assert_eq!(t.pairs(), refs.len());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Few pids and idents so that pairs collide, and odd idents (empty, long, escapes).
        #[test]
        fn matches_the_model(ops in proptest::collection::vec(op(27, 24), 1..400)) {
            check_against_model(ops)?;
        }

        /// Two idents and 40 pids: idents go past 16 pids (hash-table maps) and back.
        #[test]
        fn matches_the_model_crowded(ops in proptest::collection::vec(op(2, 40), 1..600)) {
            check_against_model(ops)?;
        }
    }
}
