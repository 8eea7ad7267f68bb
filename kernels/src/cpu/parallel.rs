//! Helpers for splitting kernels across rayon's pool.

use super::tuning::MIN_PARALLEL_FMAS;

/// A raw pointer that tasks on other threads may write through; each task must write a
/// region no other task touches.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(*mut f32);

impl SendPtr {
    /// Wraps the start of a buffer that outlives the parallel section using it.
    pub(crate) fn new(p: *mut f32) -> Self {
        Self(p)
    }

    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the field).
    #[inline(always)]
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: the pointer is only dereferenced by tasks writing disjoint regions of one
// buffer that outlives the parallel section (argued at every use).
unsafe impl Send for SendPtr {}
// SAFETY: as above; the wrapper is only copied, never used for shared mutation.
unsafe impl Sync for SendPtr {}

/// gemm's parallelism for a product of `fmas` multiply-adds issued from outside any
/// parallel task: all of rayon's threads when there are several and the work pays.
pub(crate) fn gemm_parallelism(fmas: usize) -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && fmas >= MIN_PARALLEL_FMAS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}
