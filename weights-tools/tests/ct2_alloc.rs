//! Parsing a file that declares gigabytes of payload allocates nothing of that size.
//! Kept alone in its own test binary because it installs a measuring global allocator.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use amanuensis_weights_tools::ct2::{Ct2Error, Ct2Model};
use common::*;

/// Records the largest single allocation request.
struct MaxAlloc;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for MaxAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: MaxAlloc = MaxAlloc;

#[test]
fn huge_declared_sizes_allocate_nothing_large() {
    let files = [
        // Consistent shape and byte count of almost 4 GiB; the file has 3 payload bytes.
        Var {
            name: "big".into(),
            shape: vec![0x7fff_ffff],
            dtype: I16,
            payload: vec![1, 2, 3],
            declared: Some(0xffff_fffe),
        },
        // Byte count u32::MAX, inconsistent with the shape.
        Var {
            name: "bad".into(),
            shape: vec![2],
            dtype: F16,
            payload: vec![0; 4],
            declared: Some(u32::MAX),
        },
        // Rank 255 of huge dimensions.
        Var {
            name: "rank".into(),
            shape: vec![u32::MAX; 255],
            dtype: F32,
            payload: vec![],
            declared: Some(u32::MAX),
        },
    ];
    let inputs: Vec<Vec<u8>> = files
        .iter()
        .map(|v| ct2_bytes(6, ("WhisperSpec", 3), std::slice::from_ref(v), &[]))
        .collect();
    // A variable count of u32::MAX followed by nothing.
    let mut count_only = ct2_bytes(2, ("WhisperSpec", 3), &[], &[]);
    count_only[22..26].copy_from_slice(&u32::MAX.to_le_bytes());

    LARGEST.store(0, Ordering::Relaxed);
    for bytes in inputs.iter().chain([&count_only]) {
        let err = Ct2Model::parse(bytes, "model.bin").unwrap_err();
        assert!(
            matches!(
                err,
                Ct2Error::Truncated { .. } | Ct2Error::SizeMismatch { .. }
            ),
            "{err:?}"
        );
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest < 64 * 1024,
        "largest allocation while parsing was {largest} bytes"
    );

    // The measurement itself works: a 1 MiB buffer is seen.
    let buf = std::hint::black_box(vec![7u8; 1 << 20]);
    assert!(LARGEST.load(Ordering::Relaxed) >= buf.len());
}
