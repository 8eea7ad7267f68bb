//! Kernel manifests: `Manifest::parse` (JSON, then validation of every entry and the
//! variant index), then lookups of every entry it accepted.
#![no_main]

use amanuensis_xrt::manifest::Manifest;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    amanuensis_fuzz::begin_input(data.len());
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = Manifest::parse(text, Path::new("manifest.json"), Path::new("kernels")) else {
        return;
    };
    let _ = m.target();
    for (i, e) in m.entries().iter().enumerate() {
        let _ = e.label();
        // An accepted entry is found by its own key (or by an earlier entry of that key).
        let found = m
            .find_index(&e.kernel, &e.variant.0, &e.attrs)
            .expect("an accepted entry is found by its own kernel, shapes and attributes");
        assert!(found <= i);
    }
});
