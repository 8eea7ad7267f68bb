//! Host buffer reuse: freed f32 buffers go back to a pool and are handed out again to
//! later nodes, so a graph run allocates little after the first one.

/// A pool of f32 buffers with accounting of live and peak bytes.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Vec<Vec<f32>>,
    live_bytes: usize,
    peak_bytes: usize,
}

impl BufferPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A zero-filled buffer of `n` elements: the smallest free buffer that fits, else new.
    pub fn take(&mut self, n: usize) -> Vec<f32> {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= n)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let mut buf = match best {
            Some(i) => self.free.swap_remove(i),
            None => Vec::with_capacity(n),
        };
        buf.clear();
        buf.resize(n, 0.0);
        self.note_alloc(n * 4);
        buf
    }

    /// Records bytes that became live outside `take` (e.g. graph inputs).
    pub fn note_alloc(&mut self, bytes: usize) {
        self.live_bytes += bytes;
        self.peak_bytes = self.peak_bytes.max(self.live_bytes);
    }

    /// Returns a dead buffer to the pool.
    pub fn give(&mut self, buf: Vec<f32>, bytes: usize) {
        self.live_bytes = self.live_bytes.saturating_sub(bytes);
        if buf.capacity() > 0 {
            self.free.push(buf);
        }
    }

    /// Records bytes that stopped being live without a reusable buffer.
    pub fn note_free(&mut self, bytes: usize) {
        self.live_bytes = self.live_bytes.saturating_sub(bytes);
    }

    /// Highest live byte count since the last [`reset_peak`](Self::reset_peak).
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    /// Starts a new peak measurement from the current live bytes.
    pub fn reset_peak(&mut self) {
        self.live_bytes = 0;
        self.peak_bytes = 0;
    }

    /// Bytes held by free buffers.
    pub fn pooled_bytes(&self) -> usize {
        self.free.iter().map(|b| b.capacity() * 4).sum()
    }
}
