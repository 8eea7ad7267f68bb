//! The static schedule of the NPU queues and its replay on virtual clocks: every command
//! (a BO sync or run submission on the host, a DMA transfer on a shim channel, a tile's
//! compute on a column) gets a start and an end in simulated time. Nothing here touches
//! data; the simulated device computes the numbers separately with the kernel references.

use super::{KernelWork, NpuParams};
use std::fmt;

/// A queue of the simulated device (one trace lane each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// The host thread that syncs buffers and submits runs.
    Host,
    /// Column `c`'s compute tiles.
    Column(usize),
    /// Column `c`'s shim DMA channel `ch` into the array (MM2S).
    DmaIn(usize, usize),
    /// Column `c`'s shim DMA channel `ch` out of the array (S2MM).
    DmaOut(usize, usize),
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lane::Host => write!(f, "host submit/sync"),
            Lane::Column(c) => write!(f, "column {c} compute"),
            Lane::DmaIn(c, ch) => write!(f, "column {c} shim DMA in {ch}"),
            Lane::DmaOut(c, ch) => write!(f, "column {c} shim DMA out {ch}"),
        }
    }
}

/// One command with its simulated interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Its queue.
    pub lane: Lane,
    /// What it does (kernel or transfer name).
    pub name: String,
    /// The graph node it belongs to.
    pub node: String,
    /// Index of the dispatch within the run.
    pub dispatch: usize,
    /// Column step index within the node (None for host commands).
    pub tile: Option<u64>,
    /// Bytes moved (DMA, sync).
    pub bytes: u64,
    /// Start, simulated nanoseconds from the run's start.
    pub start_ns: f64,
    /// End, simulated nanoseconds.
    pub end_ns: f64,
}

/// A host-side command in the schedule.
#[derive(Debug, Clone)]
pub enum HostCommand {
    /// Sync a buffer to the device before the next dispatch.
    SyncToDevice { value: String, bytes: u64 },
    /// Sync a buffer back after the previous dispatch (the host waits for it).
    SyncToHost { value: String, bytes: u64 },
}

/// One dispatch: a node's kernel over its column steps.
#[derive(Debug, Clone)]
pub struct DispatchCommand {
    /// Graph node.
    pub node: String,
    /// Catalogue kernel.
    pub kernel: String,
    /// Its work description.
    pub work: KernelWork,
    /// First and one-past-last step this dispatch covers (all steps unless dispatching per tile).
    pub steps: (u64, u64),
    /// Submitted inside a runlist with the runs before it (cheaper than an isolated run).
    pub chained: bool,
    /// The hardware context (xclbin) it runs in: a change from the previous run's
    /// context costs a context switch.
    pub context: String,
}

/// A schedule item in execution order.
#[derive(Debug, Clone)]
pub enum Command {
    /// Host buffer sync.
    Host(HostCommand),
    /// Kernel dispatch.
    Dispatch(DispatchCommand),
}

/// How the queues may overlap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueConfig {
    /// Columns used.
    pub columns: usize,
    /// Buffers per stream endpoint: 2 = ping/pong (DMA overlaps compute), 1 = none.
    pub depth: usize,
    /// The host waits for each run before doing anything else (a round trip per run).
    pub synchronous: bool,
}

/// Replayed schedule.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Every command, in issue order.
    pub spans: Vec<Span>,
    /// End of the last command, simulated ns.
    pub total_ns: f64,
    /// Number of runs submitted.
    pub dispatches: usize,
    /// Hardware-context switches between runs.
    pub context_switches: usize,
}

impl Timeline {
    /// Busy nanoseconds of a lane.
    pub fn busy_ns(&self, lane: Lane) -> f64 {
        self.spans
            .iter()
            .filter(|s| s.lane == lane)
            .map(|s| s.end_ns - s.start_ns)
            .sum()
    }

    /// Fraction of the span of the dispatches whose kernel satisfies `pick` during which the
    /// columns compute (mean over `columns` columns).
    pub fn column_utilisation(&self, columns: usize, pick: impl Fn(&str) -> bool) -> f64 {
        let mut window = 0.0;
        let mut busy = 0.0;
        let mut by_dispatch: std::collections::BTreeMap<usize, (f64, f64, f64)> =
            Default::default();
        for s in self
            .spans
            .iter()
            .filter(|s| s.lane != Lane::Host && pick(&s.name))
        {
            let e = by_dispatch
                .entry(s.dispatch)
                .or_insert((f64::MAX, 0.0, 0.0));
            e.0 = e.0.min(s.start_ns);
            e.1 = e.1.max(s.end_ns);
            if matches!(s.lane, Lane::Column(_)) {
                e.2 += s.end_ns - s.start_ns;
            }
        }
        for (start, end, b) in by_dispatch.values() {
            window += (end - start) * columns as f64;
            busy += b;
        }
        if window > 0.0 {
            busy / window
        } else {
            0.0
        }
    }

    /// Fraction of shim DMA time that overlaps compute on the same column.
    pub fn dma_hidden(&self) -> f64 {
        self.dma_hidden_in(|_| true)
    }

    /// [`dma_hidden`](Self::dma_hidden) over the DMA of kernels whose name satisfies `pick`.
    pub fn dma_hidden_in(&self, pick: impl Fn(&str) -> bool) -> f64 {
        let mut total = 0.0;
        let mut hidden = 0.0;
        let mut compute: std::collections::BTreeMap<usize, Vec<(f64, f64)>> = Default::default();
        for s in &self.spans {
            if let Lane::Column(c) = s.lane {
                compute.entry(c).or_default().push((s.start_ns, s.end_ns));
            }
        }
        for v in compute.values_mut() {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        for s in &self.spans {
            let c = match s.lane {
                Lane::DmaIn(c, _) | Lane::DmaOut(c, _) if pick(&s.name) => c,
                _ => continue,
            };
            total += s.end_ns - s.start_ns;
            if let Some(iv) = compute.get(&c) {
                // Compute spans of a column never overlap each other, so the sum is exact.
                let first = iv.partition_point(|x| x.1 <= s.start_ns);
                for &(a, b) in &iv[first..] {
                    if a >= s.end_ns {
                        break;
                    }
                    hidden += b.min(s.end_ns) - a.max(s.start_ns);
                }
            }
        }
        if total > 0.0 {
            hidden / total
        } else {
            1.0
        }
    }
}

/// Replays `commands` on the virtual clocks of `p` with the queue configuration `q`.
pub fn simulate(commands: &[Command], p: &NpuParams, q: &QueueConfig) -> Timeline {
    let cols = q.columns.max(1);
    let ns_per_cycle = 1e9 / p.clock_hz;
    // Each column's shim channels share the device-memory ceiling with the other columns.
    let per_col_in = (p.channel_bytes_per_cycle * p.shim_in_channels as f64 * p.clock_hz)
        .min(p.ddr_bytes_per_s / cols as f64);
    let per_col_out = (p.channel_bytes_per_cycle * p.shim_out_channels as f64 * p.clock_hz)
        .min(p.ddr_bytes_per_s / cols as f64);
    let ns_in = |b: u64| b as f64 / per_col_in * 1e9;
    let ns_out = |b: u64| b as f64 / per_col_out * 1e9;
    let sync_ns = |b: u64| (p.bo_sync_s + b as f64 / p.bo_sync_bytes_per_s) * 1e9;

    let mut tl = Timeline::default();
    let mut host = 0.0f64;
    let mut device_free = 0.0f64;
    // End times of submitted runs, to bound the runs in flight.
    let mut run_ends: Vec<f64> = Vec::new();
    let mut idx = 0usize;
    let mut current_context: Option<String> = None;
    for cmd in commands {
        match cmd {
            Command::Host(h) => {
                let (name, value, bytes, wait) = match h {
                    HostCommand::SyncToDevice { value, bytes } => {
                        ("sync to device", value, *bytes, false)
                    }
                    HostCommand::SyncToHost { value, bytes } => {
                        ("sync from device", value, *bytes, true)
                    }
                };
                if wait {
                    host = host.max(device_free);
                }
                let d = sync_ns(bytes);
                tl.spans.push(Span {
                    lane: Lane::Host,
                    name: name.into(),
                    node: value.clone(),
                    dispatch: idx,
                    tile: None,
                    bytes,
                    start_ns: host,
                    end_ns: host + d,
                });
                host += d;
            }
            Command::Dispatch(dc) => {
                if run_ends.len() >= p.in_flight {
                    host = host.max(run_ends[run_ends.len() - p.in_flight]);
                }
                if current_context.as_deref().is_some_and(|c| c != dc.context) {
                    // The array reloads another xclbin's configuration: nothing overlaps it.
                    let at = host.max(device_free);
                    let d = p.context_switch_s * 1e9;
                    tl.spans.push(Span {
                        lane: Lane::Host,
                        name: "context switch".into(),
                        node: dc.context.clone(),
                        dispatch: idx,
                        tile: None,
                        bytes: 0,
                        start_ns: at,
                        end_ns: at + d,
                    });
                    tl.context_switches += 1;
                    device_free = at + d;
                    host = host.max(at + d);
                }
                current_context = Some(dc.context.clone());
                let submit = if dc.chained {
                    p.runlist_run_s
                } else {
                    p.dispatch_s
                } * 1e9;
                tl.spans.push(Span {
                    lane: Lane::Host,
                    name: format!("submit {}", dc.kernel),
                    node: dc.node.clone(),
                    dispatch: idx,
                    tile: None,
                    bytes: 0,
                    start_ns: host,
                    end_ns: host + submit,
                });
                host += submit;
                let start = host.max(device_free);
                let w = &dc.work;
                let mut end = start;
                let (s0, s1) = dc.steps;
                for c in 0..cols {
                    let mine: Vec<u64> =
                        (s0..s1).filter(|s| (s - s0) as usize % cols == c).collect();
                    if mine.is_empty() {
                        continue;
                    }
                    // Resident blocks (weights, K/V) occupy the memory tile; kernels already count
                    // their one-time transfer in the steps' `in_bytes`, amortised.
                    let mut in_free = start;
                    let n = mine.len();
                    let mut comp_end = vec![0.0f64; n];
                    let mut out_end = vec![0.0f64; n];
                    let mut last_comp = start;
                    let mut last_out = start;
                    for (i, &step) in mine.iter().enumerate() {
                        let buf_free = if i >= q.depth {
                            comp_end[i - q.depth]
                        } else {
                            start
                        };
                        let in_start = in_free.max(buf_free);
                        let in_end = in_start + ns_in(w.step.in_bytes);
                        let half_in = w.step.in_bytes / p.shim_in_channels as u64;
                        for ch in 0..p.shim_in_channels {
                            tl.spans.push(Span {
                                lane: Lane::DmaIn(c, ch),
                                name: format!("{} in", dc.kernel),
                                node: dc.node.clone(),
                                dispatch: idx,
                                tile: Some(step),
                                bytes: half_in,
                                start_ns: in_start,
                                end_ns: in_end,
                            });
                        }
                        in_free = in_end;
                        let out_buf_free = if i >= q.depth {
                            out_end[i - q.depth]
                        } else {
                            start
                        };
                        let cs = in_end.max(last_comp).max(out_buf_free);
                        let ce = cs + w.step.cycles as f64 * ns_per_cycle;
                        tl.spans.push(Span {
                            lane: Lane::Column(c),
                            name: dc.kernel.clone(),
                            node: dc.node.clone(),
                            dispatch: idx,
                            tile: Some(step),
                            bytes: 0,
                            start_ns: cs,
                            end_ns: ce,
                        });
                        comp_end[i] = ce;
                        last_comp = ce;
                        let os = ce.max(last_out);
                        let oe = os + ns_out(w.step.out_bytes);
                        let half_out = w.step.out_bytes / p.shim_out_channels as u64;
                        for ch in 0..p.shim_out_channels {
                            tl.spans.push(Span {
                                lane: Lane::DmaOut(c, ch),
                                name: format!("{} out", dc.kernel),
                                node: dc.node.clone(),
                                dispatch: idx,
                                tile: Some(step),
                                bytes: half_out,
                                start_ns: os,
                                end_ns: oe,
                            });
                        }
                        out_end[i] = oe;
                        last_out = oe;
                        if q.depth == 1 {
                            // Without a second buffer the next input waits for this output to drain.
                            in_free = in_free.max(oe);
                        }
                    }
                    end = end.max(last_out);
                }
                device_free = end;
                run_ends.push(end);
                if q.synchronous {
                    host = host.max(end);
                }
                idx += 1;
            }
        }
    }
    tl.dispatches = idx;
    tl.total_ns = host.max(device_free);
    tl
}
