//! Memory plan per device: lifetimes over the execution order become slots (values whose
//! lifetimes do not overlap share one), and slots become ranges of one arena per device.
//! Weights are counted apart because they are uploaded once at load.
//!
//! Every device executes from this plan: an accelerator's program allocates the arena and
//! places each value at its slot's offset; the host gives each slot one buffer that all its
//! values use in turn, grown to the largest of them (the host's graphs have symbolic
//! dimensions, so its sizes are only known at run time).

use super::transfers::value_bytes;
use super::{Pass, PassContext, Plan};
use crate::device::HOST;
use crate::error::Result;
use crate::ir::{Graph, ValueSource};
use crate::plan::{Direction, NodePlacement, Transfer};
pub use crate::plan::{MemoryPlan, Slot};

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
        // Slots: in order of first use, each value takes the free slot (its last user
        // dead before the value is born) that fits it most tightly, else the largest free
        // one (which grows), else a new one.
        lives.sort_by_key(|&(v, a, _)| (a, std::cmp::Reverse(value_bytes(graph, v))));
        // (free after position, bytes, value ids)
        let mut slots: Vec<(usize, u64, Vec<usize>)> = Vec::new();
        let mut placed: Vec<(usize, usize, u64)> = Vec::new();
        for &(v, a, b) in &lives {
            let size = value_bytes(graph, v).div_ceil(ALIGN) * ALIGN;
            let free = || slots.iter().enumerate().filter(|(_, s)| s.0 < a);
            let pick = free()
                .filter(|(_, s)| s.1 >= size)
                .min_by_key(|(_, s)| s.1)
                .or_else(|| free().max_by_key(|(_, s)| s.1))
                .map(|(k, _)| k);
            let k = match pick {
                Some(k) => k,
                None => {
                    slots.push((0, 0, Vec::new()));
                    slots.len() - 1
                }
            };
            let s = &mut slots[k];
            s.0 = b;
            s.1 = s.1.max(size);
            s.2.push(v);
            placed.push((a, b, size));
        }
        let mut arena = 0u64;
        let mut slot_plans = Vec::with_capacity(slots.len());
        let mut buffers = Vec::new();
        for (_, bytes, vals) in &slots {
            for &v in vals {
                buffers.push((graph.values[v].name.clone(), arena, value_bytes(graph, v)));
            }
            slot_plans.push(Slot {
                offset: arena,
                bytes: *bytes,
                values: vals.iter().map(|&v| graph.values[v].name.clone()).collect(),
            });
            arena += bytes;
        }
        let steps = graph.order.len() + 1;
        let peak = (0..steps)
            .map(|t| {
                placed
                    .iter()
                    .filter(|p| p.0 <= t && t <= p.1)
                    .map(|p| p.2)
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
            slots: slot_plans,
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
                    "{}: arena {:.2} MB ({} buffers in {} slots), peak live {:.2} MB, weights {:.2} MB (uploaded once)",
                    m.device,
                    m.arena_bytes as f64 / 1e6,
                    m.buffers.len(),
                    m.slots.len(),
                    m.peak_live_bytes as f64 / 1e6,
                    m.weight_bytes as f64 / 1e6
                )
            })
            .collect();
        Ok(lines.join("\n"))
    }
}
