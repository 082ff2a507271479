//! Heap bytes per tracked session of the connect-limit table, measured with a counting global
//! allocator (requested sizes; the allocator's own per-block overhead is not included, and
//! the table makes few, large blocks). Prints the figures; asserts a generous bound for
//! distinct idents and the design bound (half of stock) for one ident with many pids.
//!
//! `cargo test --test anvil_memory -- --nocapture` shows the 100 k figures;
//! add `--ignored` for the 1 M ones.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use foreman::anvil_compat::ConnectLimit;
use foreman::wire::anvil::Pid;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is process-wide: measurements must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

fn ident(n: u32) -> String {
    format!(
        "imap/10.{}.{}.{}/user{n}",
        (n >> 16) & 255,
        (n >> 8) & 255,
        n & 255
    )
}

/// Builds a table of `n` sessions and returns (measured bytes per session, the table's own
/// estimate per session). The ident strings are built outside the measured window.
fn measure(n: u32, distinct_idents: bool) -> (f64, f64) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let idents: Vec<String> = if distinct_idents {
        (0..n).map(ident).collect()
    } else {
        vec![ident(1)]
    };
    let before = LIVE.load(Ordering::SeqCst);
    let mut table = ConnectLimit::new();
    for i in 0..n {
        let name = if distinct_idents {
            &idents[i as usize]
        } else {
            &idents[0]
        };
        // Distinct pids in both shapes: one mail process per session.
        table.connect(Pid::new(100_000 + i).unwrap(), name.as_bytes());
    }
    let after = LIVE.load(Ordering::SeqCst);
    assert_eq!(table.pairs(), n as usize);
    let measured = (after - before) as f64 / f64::from(n);
    let estimate = table.memory_bytes() as f64 / f64::from(n);
    drop(table);
    (measured, estimate)
}

fn report(n: u32) {
    let (distinct, distinct_est) = measure(n, true);
    let (one, one_est) = measure(n, false);
    println!(
        "connect-limit heap bytes per session, {n} sessions: distinct idents (~25 bytes) {distinct:.1} \
         (estimate {distinct_est:.1}); one ident, {n} pids {one:.1} (estimate {one_est:.1})"
    );
    assert!(
        distinct < 100.0,
        "distinct idents: {distinct:.1} bytes per session"
    );
    // One ident with a pid per session: a 12-byte pid record and a pid-index bucket each;
    // the target is half of stock's 56 bytes.
    assert!(one < 28.0, "one ident: {one:.1} bytes per session");
}

#[test]
fn bytes_per_session_100k() {
    report(100_000);
}

#[test]
#[ignore = "builds 1 M sessions; run with --ignored"]
fn bytes_per_session_1m() {
    report(1_000_000);
}
