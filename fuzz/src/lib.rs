//! Shared harness of the fuzz targets: an allocator that enforces the allocation bound,
//! and the fixed data some targets check their input against.
//!
//! The bound (issue: "a declared size or count in any file cannot make the program
//! allocate more than the file's size times a small factor, or a documented cap"): no
//! single allocation may exceed [`ALLOC_FACTOR`] bytes per input byte or [`ALLOC_FLOOR`],
//! whichever is larger. A larger request aborts the process, which libFuzzer reports as
//! a crash and saves the input. The whole process is further held to libFuzzer's
//! `-rss_limit_mb` (see `fuzz/fuzz.sh`).
//!
//! One documented exception: a zero-filled allocation may reach [`ZEROED_CAP`] (4 GiB,
//! the largest 32-bit length). symphonia 0.5 allocates some lengths its containers declare
//! as zeroed buffers before reading into them (e.g. the Vorbis comments of a FLAC file);
//! the kernel maps such pages lazily, so they cost address space rather than memory, and
//! the read that follows fails at the end of the input. `docs/reliability.md` lists them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes one allocation may take per input byte: decoded audio is kept at 16 kHz mono
/// `f32`, and `AudioStream::collect_all` reserves at most 256 samples (1 KiB) per input byte.
pub const ALLOC_FACTOR: usize = 1024;

/// Bytes any one allocation may take whatever the input's size: fixed working buffers
/// (decoder tables, FFT blocks, the 64 KiB read buffers) stay far below it.
pub const ALLOC_FLOOR: usize = 64 << 20;

/// Largest zero-filled allocation tolerated whatever the input (see the module docs).
pub const ZEROED_CAP: usize = 4 << 30;

static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The system allocator, refusing (by aborting) single allocations above the bound set
/// for the current input.
pub struct BoundedAlloc;

impl BoundedAlloc {
    #[inline]
    fn check(size: usize) {
        if size > LIMIT.load(Ordering::Relaxed) {
            over_limit(size);
        }
    }
}

#[cold]
fn over_limit(size: usize) -> ! {
    // No allocation here: format the number by hand.
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = size;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"==fuzz== allocation of ");
    let _ = err.write_all(&buf[i..]);
    let _ = err.write_all(
        b" bytes exceeds the bound for this input (ALLOC_FACTOR x input size or ALLOC_FLOOR; ZEROED_CAP if zero-filled)\n",
    );
    std::process::abort();
}

// SAFETY: forwards to the system allocator unchanged; only adds a size check.
unsafe impl GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ZEROED_CAP {
            over_limit(layout.size());
        }
        // SAFETY: forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        // SAFETY: forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;

/// Sets the allocation bound for an input of `len` bytes; call first in every target.
pub fn begin_input(len: usize) {
    LIMIT.store(
        len.saturating_mul(ALLOC_FACTOR).max(ALLOC_FLOOR),
        Ordering::Relaxed,
    );
}

/// The weight declarations of the example plugin's graph (f32 weights).
pub const SWISH_MLP_GRAPH: &str = include_str!("../../examples/plugin-op/graphs/swish-mlp.graph");

/// A small Whisper-layout vocabulary (256 byte tokens, three merges' results, the special
/// tokens, two timestamps) for the `tokenizer_json` target; its seeds match it.
pub fn small_vocabulary() -> String {
    include_str!("../data/small-vocabulary.txt").to_string()
}
