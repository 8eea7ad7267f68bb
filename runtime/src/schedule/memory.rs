//! Memory plan per device: lifetimes over the execution order become offsets in one arena
//! per device (first fit by size), reporting the peak; weights are counted apart because
//! they are uploaded once at load. A device's program allocates its arena from this plan
//! and places every value at its offset.

use super::placement::NodePlacement;
use super::transfers::{value_bytes, Direction, Transfer};
use super::{Pass, PassContext, Plan};
use crate::device::HOST;
use crate::error::Result;
use crate::ir::{Graph, ValueSource};

/// One device's arena.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// The device (`cpu` for the host).
    pub device: String,
    /// Arena size: the highest offset + size over all buffers.
    pub arena_bytes: u64,
    /// Most bytes live at once.
    pub peak_live_bytes: u64,
    /// Weights its nodes read, in the graph's types (a device may hold them in its own
    /// format; uploaded once at load).
    pub weight_bytes: u64,
    /// (value, offset, bytes) of every buffer in the arena.
    pub buffers: Vec<(String, u64, u64)>,
}

impl MemoryPlan {
    /// Offset and size of a value's buffer.
    pub fn slot(&self, value: &str) -> Option<(u64, u64)> {
        self.buffers
            .iter()
            .find(|b| b.0 == value)
            .map(|b| (b.1, b.2))
    }
}

const ALIGN: u64 = 4096;

/// Plans the host's arena and, when any node is placed elsewhere, the device's.
///
/// Lifetimes are positions in the execution order. On the device a value lives from
/// its producer (or, when uploaded, from the start of the segment it is uploaded for)
/// to its last device reader (or, when downloaded, to the end of its segment, since
/// downloads follow the segment).
pub fn plan_memory(
    graph: &Graph,
    placements: &[NodePlacement],
    transfers: &[Transfer],
    segments: &[Vec<usize>],
) -> Vec<MemoryPlan> {
    let mut pos = vec![0usize; graph.nodes.len()];
    for (i, &ni) in graph.order.iter().enumerate() {
        pos[ni] = i;
    }
    let mut seg_of = vec![None; graph.nodes.len()];
    for (k, seg) in segments.iter().enumerate() {
        for &ni in seg {
            seg_of[ni] = Some(k);
        }
    }
    let seg_span = |k: usize| {
        let p: Vec<usize> = segments[k].iter().map(|&n| pos[n]).collect();
        (
            p.iter().copied().min().unwrap_or(0),
            p.iter().copied().max().unwrap_or(0),
        )
    };
    let uploaded_for: std::collections::HashMap<&str, usize> = transfers
        .iter()
        .filter(|t| t.direction == Direction::ToDevice)
        .map(|t| (t.value.as_str(), t.node))
        .collect();
    let downloaded: std::collections::HashSet<&str> = transfers
        .iter()
        .filter(|t| t.direction == Direction::ToHost)
        .map(|t| t.value.as_str())
        .collect();
    let mut devices: Vec<String> = vec![HOST.to_string()];
    for &ni in &graph.order {
        if !placements[ni].on_host() && !devices.contains(&placements[ni].device) {
            devices.push(placements[ni].device.clone());
        }
    }
    let end = graph.order.len();
    let mut plans = Vec::new();
    for dev in devices {
        let host = dev == HOST;
        let here = |ni: usize| placements[ni].device == dev;
        // (value, first position, last position)
        let mut lives: Vec<(usize, usize, usize)> = Vec::new();
        for (v, info) in graph.values.iter().enumerate() {
            if !graph.is_live_value(v) || info.source == ValueSource::Weight {
                continue;
            }
            let last_reader = graph
                .live_nodes()
                .filter(|(ni, n)| here(*ni) && n.inputs.contains(&v))
                .map(|(ni, _)| pos[ni])
                .max();
            let upload = uploaded_for.get(info.name.as_str()).copied();
            let span = if host {
                let a = match info.source {
                    ValueSource::Input(_) => Some(0),
                    ValueSource::Node { node, .. } if here(node) => Some(pos[node]),
                    ValueSource::Node { node, .. } if downloaded.contains(info.name.as_str()) => {
                        Some(seg_of[node].map_or(pos[node], |k| seg_span(k).1))
                    }
                    _ => None,
                };
                a.map(|a| {
                    let up = upload.map(|n| seg_of[n].map_or(pos[n], |k| seg_span(k).0));
                    let b = last_reader.into_iter().chain(up).max().unwrap_or(a).max(a);
                    (a, if graph.outputs.contains(&v) { end } else { b })
                })
            } else {
                let a = match (&info.source, upload) {
                    (ValueSource::Node { node, .. }, _) if here(*node) => Some(pos[*node]),
                    (_, Some(n)) => Some(seg_of[n].map_or(pos[n], |k| seg_span(k).0)),
                    _ => None,
                };
                a.map(|a| {
                    let mut b = last_reader.unwrap_or(a).max(a);
                    if let ValueSource::Node { node, .. } = info.source {
                        if here(node) && downloaded.contains(info.name.as_str()) {
                            b = b.max(seg_of[node].map_or(pos[node], |k| seg_span(k).1));
                        }
                    }
                    (a, b)
                })
            };
            if let Some((a, b)) = span {
                lives.push((v, a, b));
            }
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
                        .live_nodes()
                        .any(|(ni, n)| here(ni) && n.inputs.contains(v))
            })
            .map(|(v, _)| value_bytes(graph, v))
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

/// The memory pass.
pub struct MemoryPass;

impl Pass for MemoryPass {
    fn name(&self) -> &str {
        "memory"
    }

    fn run(&self, _cx: &PassContext, plan: &mut Plan) -> Result<String> {
        plan.memory = plan_memory(
            &plan.graph,
            &plan.placements,
            &plan.transfers,
            &plan.segments,
        );
        let lines: Vec<String> = plan
            .memory
            .iter()
            .filter(|m| m.device != HOST || plan.memory.len() == 1)
            .map(|m| {
                format!(
                    "{}: arena {:.2} MB ({} buffers), peak live {:.2} MB, weights {:.2} MB (uploaded once)",
                    m.device,
                    m.arena_bytes as f64 / 1e6,
                    m.buffers.len(),
                    m.peak_live_bytes as f64 / 1e6,
                    m.weight_bytes as f64 / 1e6
                )
            })
            .collect();
        Ok(lines.join("\n"))
    }
}
