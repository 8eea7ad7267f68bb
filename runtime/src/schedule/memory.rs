//! Memory plan per device: lifetimes over the execution order become offsets in one arena
//! per device (first fit by size), reporting the peak; weights are counted apart because
//! they are uploaded once at load.

use super::placement::NodePlacement;
use super::transfers::{value_bytes, Direction, Transfer};
use crate::device::DeviceKind;
use crate::ir::{Graph, ValueSource};

/// One device's arena.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// The device.
    pub device: DeviceKind,
    /// Arena size: the highest offset + size over all buffers.
    pub arena_bytes: u64,
    /// Most bytes live at once.
    pub peak_live_bytes: u64,
    /// Weights resident on the device (uploaded once; bf16 for matrices on the NPU).
    pub weight_bytes: u64,
    /// (value, offset, bytes) of every buffer in the arena.
    pub buffers: Vec<(String, u64, u64)>,
}

const ALIGN: u64 = 4096;

/// Plans both devices' arenas.
pub fn plan_memory(
    graph: &Graph,
    placements: &[NodePlacement],
    transfers: &[Transfer],
) -> Vec<MemoryPlan> {
    let pos: Vec<usize> = {
        let mut p = vec![0; graph.nodes.len()];
        for (i, &ni) in graph.order.iter().enumerate() {
            p[ni] = i;
        }
        p
    };
    let mut plans = Vec::new();
    for dev in [DeviceKind::Cpu, DeviceKind::Npu] {
        let here = |ni: usize| placements[ni].device == dev;
        // (value, first position, last position)
        let mut lives: Vec<(usize, usize, usize)> = Vec::new();
        for (v, info) in graph.values.iter().enumerate() {
            let users: Vec<usize> = graph
                .nodes
                .iter()
                .enumerate()
                .filter(|(ni, n)| here(*ni) && n.inputs.contains(&v))
                .map(|(ni, _)| pos[ni])
                .collect();
            let (def_pos, lives_here) = match info.source {
                ValueSource::Weight => continue,
                ValueSource::Input(_) => (
                    0,
                    dev == DeviceKind::Cpu
                        || transfers
                            .iter()
                            .any(|t| t.direction == Direction::ToDevice && t.value == info.name),
                ),
                ValueSource::Node { node, .. } => {
                    let copy_in = transfers
                        .iter()
                        .any(|t| t.direction == Direction::ToDevice && t.value == info.name);
                    let copy_out = transfers
                        .iter()
                        .any(|t| t.direction == Direction::ToHost && t.value == info.name);
                    (
                        pos[node],
                        here(node)
                            || (dev == DeviceKind::Npu && copy_in)
                            || (dev == DeviceKind::Cpu && copy_out),
                    )
                }
            };
            if !lives_here {
                continue;
            }
            let last = users.iter().copied().max().unwrap_or(def_pos).max(def_pos);
            let last = if graph.outputs.contains(&v) {
                graph.order.len()
            } else {
                last
            };
            lives.push((v, def_pos, last));
        }
        // Largest first, each at the lowest offset free during its lifetime.
        lives.sort_by_key(|&(v, a, _)| (std::cmp::Reverse(value_bytes(graph, v)), a));
        let mut placed: Vec<(usize, usize, u64, u64)> = Vec::new();
        let mut buffers = Vec::new();
        let mut arena = 0u64;
        for &(v, a, b) in &lives {
            let size = value_bytes(graph, v).div_ceil(ALIGN) * ALIGN;
            let mut busy: Vec<(u64, u64)> = placed
                .iter()
                .filter(|p| p.0 <= b && a <= p.1)
                .map(|p| (p.2, p.2 + p.3))
                .collect();
            busy.sort();
            let mut off = 0u64;
            for (s, e) in busy {
                if off + size <= s {
                    break;
                }
                off = off.max(e);
            }
            placed.push((a, b, off, size));
            arena = arena.max(off + size);
            buffers.push((graph.values[v].name.clone(), off, size));
        }
        let steps = graph.order.len() + 1;
        let peak = (0..steps)
            .map(|t| {
                placed
                    .iter()
                    .filter(|p| p.0 <= t && t <= p.1)
                    .map(|p| p.3)
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);
        let weight_bytes: u64 = graph
            .values
            .iter()
            .enumerate()
            .filter(|(v, info)| {
                info.source == ValueSource::Weight
                    && graph
                        .nodes
                        .iter()
                        .enumerate()
                        .any(|(ni, n)| here(ni) && n.inputs.contains(v))
            })
            .map(|(v, info)| {
                let b = value_bytes(graph, v);
                if dev == DeviceKind::Npu && info.ty.rank() >= 2 {
                    b / 2
                } else {
                    b
                }
            })
            .sum();
        plans.push(MemoryPlan {
            device: dev,
            arena_bytes: arena,
            peak_live_bytes: peak,
            weight_bytes,
            buffers,
        });
    }
    plans
}
