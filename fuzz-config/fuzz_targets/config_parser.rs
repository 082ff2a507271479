//! Any bytes as a dovecot.conf: the loader must not panic, must report errors with positions
//! inside the input, and must print (`-n` and `-a` renderings, the stock copy) without panicking.
#![no_main]

use foreman::master_compat::config::error::Place;
use foreman::master_compat::config::{dump, load_str, render, Limits, LoadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // No includes: the fuzzer must not read the file system.
    let limits = Limits { max_include_depth: 0, ..Limits::default() };
    for foreman in [false, true] {
        let loaded = load_str("fuzz.conf", &text, LoadOptions { foreman, limits, ..Default::default() });
        let lines = u32::try_from(text.split('\n').count()).unwrap_or(u32::MAX);
        for e in &loaded.errors {
            if let Place::Line(pos) = &e.place {
                assert!(pos.line >= 1 && pos.line <= lines, "{e}");
            }
        }
        let _ = dump::dump(&loaded, dump::Scope::Changed, false);
        let _ = dump::dump(&loaded, dump::Scope::All, true);
        let _ = render::stock_copy(&loaded.tree.root);
        if loaded.errors.is_empty() {
            let _ = loaded.master_settings();
        }
    }
});
