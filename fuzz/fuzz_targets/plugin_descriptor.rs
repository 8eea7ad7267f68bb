//! The plugin handshake (`check_descriptor`), on descriptors built from the input rather
//! than read from a loaded library (no dlopen).
//!
//! Input layout: one flag byte, then magic (8), ABI version (4), size (4), layout
//! fingerprint (8), then five strings (plugin name, plugin version, runtime version,
//! rustc version, target), each a little-endian u16 length and its bytes. Flag bits 0..=5
//! replace the prefix, the fingerprint and the three build strings by this build's own
//! values, so that the seeds reach the deep checks whatever compiler builds the target.
//! A length of 0xFFFF is a null pointer; a length past the input but within the 4 KiB
//! string limit is cut to what the input holds (the pointer must stay readable); above
//! that limit it is kept (the handshake must refuse it without reading).
#![no_main]

use amanuensis_runtime::plugin::{
    check_descriptor, PluginDescriptor, RawStr, LAYOUT_FINGERPRINT, PLUGIN_ABI_VERSION,
    PLUGIN_MAGIC, RUNTIME_VERSION, RUSTC_VERSION, TARGET,
};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let got = self.take(N);
        out[..got.len()].copy_from_slice(got);
        out
    }

    fn raw_str(&mut self) -> RawStr {
        let len = usize::from(u16::from_le_bytes(self.array::<2>()));
        if len == 0xFFFF {
            return RawStr {
                ptr: std::ptr::null(),
                len: 99,
            };
        }
        if len > 4096 {
            // Refused on its length alone: the pointer is never read.
            return RawStr {
                ptr: self.0.as_ptr(),
                len,
            };
        }
        let s = self.take(len);
        RawStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    amanuensis_fuzz::begin_input(data.len());
    let mut c = Cursor(data);
    let flags = c.array::<1>()[0];
    let mut d = PluginDescriptor {
        magic: c.array(),
        abi_version: u32::from_le_bytes(c.array()),
        size: u32::from_le_bytes(c.array()),
        layout_fingerprint: u64::from_le_bytes(c.array()),
        plugin_name: c.raw_str(),
        plugin_version: c.raw_str(),
        runtime_version: c.raw_str(),
        rustc_version: c.raw_str(),
        target: c.raw_str(),
    };
    let own = |s: &'static str| RawStr::new(s);
    if flags & 1 != 0 {
        d.magic = PLUGIN_MAGIC;
        d.abi_version = PLUGIN_ABI_VERSION;
    }
    if flags & 2 != 0 {
        d.size = std::mem::size_of::<PluginDescriptor>() as u32;
    }
    if flags & 4 != 0 {
        d.layout_fingerprint = LAYOUT_FINGERPRINT;
    }
    if flags & 8 != 0 {
        d.runtime_version = own(RUNTIME_VERSION);
    }
    if flags & 16 != 0 {
        d.rustc_version = own(RUSTC_VERSION);
    }
    if flags & 32 != 0 {
        d.target = own(TARGET);
    }
    // SAFETY: every string pointer is null, points at `len` bytes of `data`, or has a
    // length above the limit (refused unread), as `check_descriptor` requires.
    let r = unsafe { check_descriptor(&d, Path::new("libfuzz.so")) };
    if let Ok((name, version)) = r {
        // Only this build's own claims pass.
        assert!(
            flags & 63 == 63
                || (d.magic == PLUGIN_MAGIC && d.layout_fingerprint == LAYOUT_FINGERPRINT)
        );
        assert!(name.len() <= 4096 && version.len() <= 4096);
    }
});
