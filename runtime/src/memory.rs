//! The host's arena: the memory plan's slots as buffers. Every host value is written into
//! the buffer of the slot the plan gave it and hands it back when it dies, so the values
//! of a slot use one buffer in turn, as a device's values use one range of its arena.
//! A slot's buffer grows to the largest value it has held (host graphs have symbolic
//! dimensions) and is kept between runs.

use crate::ir::Graph;
use crate::schedule::MemoryPlan;

/// One buffer per slot of a host memory plan, with accounting of live and peak bytes.
#[derive(Debug, Default)]
pub struct HostArena {
    /// Per value id: its slot.
    slot_of: Vec<Option<usize>>,
    /// Per slot: its buffer while no live value holds it.
    buffers: Vec<Option<Vec<f32>>>,
    /// Per slot: the live value using it.
    holder: Vec<Option<usize>>,
    live_bytes: usize,
    peak_bytes: usize,
    /// Buffers handed out that the plan did not provide (a value without a slot, or its
    /// slot still held): zero for a consistent plan, which the tests check.
    unplanned: usize,
}

impl HostArena {
    /// The arena of `plan` (a host memory plan of `graph`); values it does not name get
    /// buffers of their own.
    pub fn from_plan(graph: &Graph, plan: &MemoryPlan) -> HostArena {
        let mut slot_of = vec![None; graph.values.len()];
        for (k, slot) in plan.slots.iter().enumerate() {
            for name in &slot.values {
                if let Some(v) = graph.values.iter().position(|x| &x.name == name) {
                    slot_of[v] = Some(k);
                }
            }
        }
        Self::with_slots(slot_of, plan.slots.len())
    }

    /// An arena of `n` slots; `slot_of[v]` is value `v`'s.
    fn with_slots(slot_of: Vec<Option<usize>>, n: usize) -> HostArena {
        HostArena {
            slot_of,
            buffers: vec![None; n],
            holder: vec![None; n],
            ..HostArena::default()
        }
    }

    /// The buffer for value `v`, taken from its slot (empty when the slot has none yet).
    /// A value without a slot, or whose slot another live value still holds, gets a
    /// new buffer and is counted as unplanned.
    pub fn take(&mut self, v: usize) -> Vec<f32> {
        match self.slot_of.get(v).copied().flatten() {
            Some(k) if self.holder[k].is_none_or(|h| h == v) => {
                self.holder[k] = Some(v);
                self.buffers[k].take().unwrap_or_default()
            }
            _ => {
                self.unplanned += 1;
                Vec::new()
            }
        }
    }

    /// Puts back a buffer taken for `v` that its op did not use; `v` keeps the slot.
    pub fn restore(&mut self, v: usize, buf: Vec<f32>) {
        if let Some(k) = self.slot_of.get(v).copied().flatten() {
            self.keep_larger(k, buf);
        }
    }

    /// Value `v` died: its buffer goes back to its slot, which becomes free.
    pub fn give(&mut self, v: usize, buf: Vec<f32>) {
        if let Some(k) = self.slot_of.get(v).copied().flatten() {
            if self.holder[k] == Some(v) {
                self.holder[k] = None;
            }
            if self.holder[k].is_none() {
                self.keep_larger(k, buf);
            }
        }
    }

    fn keep_larger(&mut self, k: usize, buf: Vec<f32>) {
        match &self.buffers[k] {
            Some(b) if b.capacity() >= buf.capacity() => {}
            _ => self.buffers[k] = Some(buf),
        }
    }

    /// Counts a buffer the plan could not provide.
    pub fn note_unplanned(&mut self) {
        self.unplanned += 1;
    }

    /// Records bytes that became live.
    pub fn note_alloc(&mut self, bytes: usize) {
        self.live_bytes += bytes;
        self.peak_bytes = self.peak_bytes.max(self.live_bytes);
    }

    /// Records bytes that stopped being live.
    pub fn note_free(&mut self, bytes: usize) {
        self.live_bytes = self.live_bytes.saturating_sub(bytes);
    }

    /// Highest live byte count since the last [`begin_run`](Self::begin_run).
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    /// Starts a run: the last run's values are dead or the caller's now, so every slot is
    /// free; the peak is measured anew.
    pub fn begin_run(&mut self) {
        self.holder.iter_mut().for_each(|h| *h = None);
        self.live_bytes = 0;
        self.peak_bytes = 0;
    }

    /// Bytes held by the slots' buffers (their capacity), live values' excluded.
    pub fn pooled_bytes(&self) -> usize {
        self.buffers
            .iter()
            .flatten()
            .map(|b| b.capacity() * 4)
            .sum()
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.buffers.len()
    }

    /// Buffers handed out beside the plan since the arena was made.
    pub fn unplanned(&self) -> usize {
        self.unplanned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_one_slot_use_one_buffer_in_turn() {
        // Values 0 and 1 share slot 0; value 2 has slot 1.
        let mut a = HostArena::with_slots(vec![Some(0), Some(0), Some(1)], 2);
        let mut b0 = a.take(0);
        b0.resize(1000, 1.0);
        let p = b0.as_ptr();
        a.give(0, b0);
        let b1 = a.take(1);
        assert_eq!(b1.as_ptr(), p, "value 1 reuses value 0's buffer");
        assert_eq!(a.unplanned(), 0);
    }

    #[test]
    fn a_slot_still_held_is_not_handed_out_twice() {
        let mut a = HostArena::with_slots(vec![Some(0), Some(0)], 1);
        let mut b0 = a.take(0);
        b0.resize(10, 0.0);
        // Value 1 needs the slot while value 0 is live: a plan error, counted.
        let b1 = a.take(1);
        assert_eq!(b1.capacity(), 0);
        assert_eq!(a.unplanned(), 1);
        // A new run frees every slot.
        a.give(0, b0);
        a.begin_run();
        let _ = a.take(1);
        assert_eq!(a.unplanned(), 1);
    }

    #[test]
    fn the_larger_of_two_buffers_for_a_slot_is_kept() {
        let mut a = HostArena::with_slots(vec![Some(0)], 1);
        let offered = a.take(0);
        a.restore(0, Vec::with_capacity(8));
        a.give(0, Vec::with_capacity(64));
        assert!(a.pooled_bytes() >= 64 * 4);
        drop(offered);
    }
}
