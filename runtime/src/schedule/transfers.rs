//! Partition + transfers: an explicit to-device / to-host transfer on every edge that
//! crosses devices (the naive form puts one around every device node), then a pass that
//! removes the redundant pairs so that intermediates between device nodes stay resident.
//! The segments pass turns the transfers that remain into upload and download steps the
//! session executes.

use super::{Pass, PassContext, Plan};
use crate::error::Result;
use crate::ir::{Graph, ValueSource};
use crate::plan::NodePlacement;
pub use crate::plan::{Direction, Transfer};

/// Bytes of a value whose shape is static (0 when symbolic).
pub fn value_bytes(graph: &Graph, v: usize) -> u64 {
    let ty = &graph.values[v].ty;
    let n: Option<usize> = ty.shape.iter().map(|d| d.known()).product();
    n.map(|n| (n * ty.dtype.size()) as u64).unwrap_or(0)
}

/// The naive partition: every non-weight input of a device node comes in, every output
/// goes out (the host round trip per node of the seed design).
pub fn insert_transfers(graph: &Graph, placements: &[NodePlacement]) -> Vec<Transfer> {
    let mut out = Vec::new();
    for &ni in &graph.order {
        if placements[ni].on_host() {
            continue;
        }
        let n = &graph.nodes[ni];
        for &v in &n.inputs {
            if graph.values[v].source != ValueSource::Weight {
                out.push(Transfer {
                    value: graph.values[v].name.clone(),
                    direction: Direction::ToDevice,
                    bytes: value_bytes(graph, v),
                    node: ni,
                });
            }
        }
        for &v in &n.outputs {
            out.push(Transfer {
                value: graph.values[v].name.clone(),
                direction: Direction::ToHost,
                bytes: value_bytes(graph, v),
                node: ni,
            });
        }
    }
    out
}

/// Drops every to-host whose value only device nodes read (and is no graph output), every
/// to-device of a value produced on the device, and repeated to-devices of one value.
/// Returns the kept transfers and the number removed.
pub fn remove_redundant(
    graph: &Graph,
    placements: &[NodePlacement],
    transfers: Vec<Transfer>,
) -> (Vec<Transfer>, usize) {
    let on_dev = |ni: usize| !placements[ni].on_host();
    let ids: std::collections::HashMap<&str, usize> = graph
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    let id = |name: &str| ids[name];
    // Values some CPU node reads.
    let mut host_read = vec![false; graph.values.len()];
    for (ni, n) in graph.live_nodes() {
        if !on_dev(ni) {
            for &v in &n.inputs {
                host_read[v] = true;
            }
        }
    }
    let before = transfers.len();
    let mut seen_in = std::collections::HashSet::new();
    let kept: Vec<Transfer> = transfers
        .into_iter()
        .filter(|t| {
            let v = id(&t.value);
            match t.direction {
                Direction::ToHost => {
                    host_read[v] || graph.outputs.contains(&v)
                }
                Direction::ToDevice => {
                    let produced_on_dev = matches!(graph.values[v].source, ValueSource::Node { node, .. } if on_dev(node));
                    !produced_on_dev && seen_in.insert(v)
                }
            }
        })
        .collect();
    let removed = before - kept.len();
    (kept, removed)
}

/// The naive transfers: every device node's inputs come in and its outputs go out.
pub struct TransfersPass;

impl Pass for TransfersPass {
    fn name(&self) -> &str {
        "transfers"
    }

    fn run(&self, _cx: &PassContext, plan: &mut Plan) -> Result<String> {
        plan.transfers = insert_transfers(&plan.graph, &plan.placements);
        Ok(format!(
            "{} transfers around device nodes, {:.2} MB per run",
            plan.transfers.len(),
            plan.transfer_bytes() as f64 / 1e6
        ))
    }
}

/// Residency: removes the transfer pairs whose value stays on the device.
pub struct ResidencyPass;

impl Pass for ResidencyPass {
    fn name(&self) -> &str {
        "residency"
    }

    fn optional(&self) -> bool {
        true
    }

    fn run(&self, _cx: &PassContext, plan: &mut Plan) -> Result<String> {
        let naive = std::mem::take(&mut plan.transfers);
        let (kept, removed) = remove_redundant(&plan.graph, &plan.placements, naive);
        plan.transfers = kept;
        plan.transfers_removed = removed;
        let to_dev = plan
            .transfers
            .iter()
            .filter(|t| t.direction == Direction::ToDevice)
            .count();
        let mut s = format!(
            "{removed} redundant transfers removed; {} remain ({to_dev} to the device, {} to the host), {:.2} MB per run",
            plan.transfers.len(),
            plan.transfers.len() - to_dev,
            plan.transfer_bytes() as f64 / 1e6
        );
        for t in &plan.transfers {
            s.push_str(&format!(
                "\n{:?} {} ({:.2} MB)",
                t.direction,
                t.value,
                t.bytes as f64 / 1e6
            ));
        }
        Ok(s)
    }
}
