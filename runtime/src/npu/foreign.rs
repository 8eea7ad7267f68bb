//! Schedules that our scheduler did not make, described launch by launch and priced with
//! the same parameter set as our own plans: another NPU pipeline's launch graph (its
//! designs, i.e. xclbins with their hardware contexts, the runs and runlists it submits,
//! the shapes and tiles of each run, the buffers it syncs, the host work between runs) and
//! its hardware-context slot policy. The model is strictly serial, as such host programs
//! are: the host prepares, submits, waits, copies out, and only then prepares the next
//! submission. Every figure it gives is a projection.
//!
//! ```
//! use amanuensis_runtime::npu::foreign::{DesignKind, ForeignSchedule, SlotPolicy, Work};
//! use amanuensis_runtime::npu::NpuParams;
//! let mut s = ForeignSchedule::new("one gemm", SlotPolicy::lru(6, true));
//! let g = s.design("gemm 512", DesignKind::whole_array_gemm([64, 64, 32], 4), true, 3 << 20);
//! s.host(512 * 512, "convert A");
//! s.submit(g, Work::Gemm { m: 512, k: 512, n: 512 }, 512 * 512 * 2, 512 * 512 * 4);
//! let p = s.price(&NpuParams::phoenix()).unwrap();
//! assert_eq!((p.submissions, p.runs, p.creates), (1, 1, 0));
//! assert!(p.total_ns > p.compute_ns);
//! ```

use super::NpuParams;
use std::fmt;

/// What a design (one xclbin and its hardware context) computes, and how.
#[derive(Debug, Clone, PartialEq)]
pub enum DesignKind {
    /// A bf16 matrix multiply laid over the whole array: each of the `rows × columns`
    /// compute tiles produces `tile[0] × tile[2]` outputs per pass over `tile[1]` of K.
    /// Each array block of `rows·m × columns·n` outputs streams its A rows and B columns
    /// from device memory, so A is read `N / (columns·n)` times and B `M / (rows·m)` times
    /// (mlir-aie's whole-array GEMM sequence); C is written once, `out_bytes` per element.
    Gemm {
        /// Compute-tile tile m, k, n.
        tile: [usize; 3],
        /// Bytes per output element (4 = f32, 2 = bf16).
        out_bytes: usize,
    },
    /// A row-wise kernel (softmax, GELU) over `tiles` compute tiles, priced by its own
    /// cycles per element and the bytes it streams.
    RowOp {
        /// Compute tiles it runs on.
        tiles: usize,
        /// Cycles one tile spends per element (a property of the kernel).
        cycles_per_element: f64,
        /// Bytes read per element.
        in_bytes: usize,
        /// Bytes written per element.
        out_bytes: usize,
    },
}

impl DesignKind {
    /// A whole-array GEMM design with these compute-tile tiles.
    pub fn whole_array_gemm(tile: [usize; 3], out_bytes: usize) -> Self {
        DesignKind::Gemm { tile, out_bytes }
    }
}

/// One design: an xclbin, the hardware context it needs, and the buffers it allocates
/// for its lifetime.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    /// Name (for reports).
    pub name: String,
    /// What it computes.
    pub kind: DesignKind,
    /// Whether it keeps weights resident in its buffers (the slot policy may evict such
    /// designs last, since evicting them forces a re-upload).
    pub holds_weights: bool,
    /// Bytes of buffer objects allocated whenever its context is (re-)created.
    pub bo_bytes: u64,
}

/// Index of a design in its schedule.
pub type DesignId = usize;

/// The work of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A padded M × K × N matrix multiply (on a [`DesignKind::Gemm`] design).
    Gemm {
        /// Rows of A and C.
        m: usize,
        /// Inner dimension.
        k: usize,
        /// Columns of B and C.
        n: usize,
    },
    /// Elements through a [`DesignKind::RowOp`] design.
    Elements(u64),
}

/// One step of the schedule, in program order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Host CPU work between runs: `elements` fp32 element passes.
    Host {
        /// Element passes (each element read and written once counts one).
        elements: u64,
        /// What it is (for reports).
        what: String,
    },
    /// One submission the host waits for: its inputs synced to the device, its runs (more
    /// than one = a runlist of chained runs), its outputs synced back.
    Submit {
        /// The design every run of the submission uses.
        design: DesignId,
        /// The runs' work.
        runs: Vec<Work>,
        /// Bytes synced to the device before the runs.
        sync_in: u64,
        /// Bytes synced back after them.
        sync_out: u64,
    },
}

/// How many hardware contexts the host keeps and which one it evicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPolicy {
    /// Contexts held at once (the driver's limit or less).
    pub slots: usize,
    /// Evict designs that hold weights only when no other design can be evicted.
    pub weights_last: bool,
}

impl SlotPolicy {
    /// Least recently used among `slots` contexts, weight-holding designs last if asked.
    pub fn lru(slots: usize, weights_last: bool) -> Self {
        SlotPolicy {
            slots,
            weights_last,
        }
    }
}

/// A described schedule: the designs it uses, one pass of its steps, its slot policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignSchedule {
    /// Name (for reports).
    pub name: String,
    /// Designs, indexed by [`DesignId`].
    pub designs: Vec<Design>,
    /// One pass, in program order.
    pub steps: Vec<Step>,
    /// Context-slot policy.
    pub policy: SlotPolicy,
}

/// Why a schedule cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForeignError {
    /// A step names a design the schedule does not have.
    UnknownDesign {
        /// The step's index.
        step: usize,
        /// The id it used.
        design: DesignId,
    },
    /// A run's work does not match its design's kind (say elements on a GEMM design).
    WorkMismatch {
        /// The step's index.
        step: usize,
        /// The design's name.
        design: String,
    },
    /// A submission without runs, a zero-sized tile, or no context slot at all.
    Invalid(String),
}

impl fmt::Display for ForeignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForeignError::UnknownDesign { step, design } => {
                write!(f, "step {step} uses design {design}, which is not declared")
            }
            ForeignError::WorkMismatch { step, design } => write!(
                f,
                "step {step}: the run's work does not match design '{design}' (GEMM shapes go to GEMM designs, elements to row ops)"
            ),
            ForeignError::Invalid(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for ForeignError {}

/// The projection of one steady-state pass, split by cause (all nanoseconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForeignProjection {
    /// Wall time of the pass.
    pub total_ns: f64,
    /// GEMM runs on the array.
    pub compute_ns: f64,
    /// Row-op runs (softmax, GELU) on the array.
    pub rowop_ns: f64,
    /// Submitting runs (isolated runs and runs chained in runlists).
    pub dispatch_ns: f64,
    /// Switching the array between hardware contexts.
    pub switch_ns: f64,
    /// Re-creating evicted contexts: creation, buffer re-allocation, runlist rebuilds.
    pub create_ns: f64,
    /// Host CPU work: element passes, per-submission bookkeeping, buffer syncs.
    pub host_ns: f64,
    /// Submissions the host waited for.
    pub submissions: usize,
    /// Runs.
    pub runs: usize,
    /// Context switches.
    pub switches: usize,
    /// Context (re-)creations.
    pub creates: usize,
    /// Bytes the runs moved between device memory and the array.
    pub ddr_bytes: u64,
    /// Bytes synced between host and device.
    pub sync_bytes: u64,
}

impl ForeignProjection {
    /// Device-side time: compute, row ops, dispatch, switches, creations.
    pub fn device_ns(&self) -> f64 {
        self.total_ns - self.host_ns
    }
}

fn ceil_div(a: usize, b: usize) -> usize {
    a.div_ceil(b.max(1))
}

/// Array time and device-memory bytes of one GEMM run on a whole-array design: the
/// longer of the tiles' compute and the stream of A, B and C through device memory
/// (double-buffered, so the two overlap).
pub fn gemm_run(p: &NpuParams, tile: [usize; 3], out_bytes: usize, work: Work) -> (f64, u64) {
    let Work::Gemm { m, k, n } = work else {
        return (0.0, 0);
    };
    let [tm, tk, tn] = tile;
    let (rows, cols) = (p.rows, p.columns);
    let blocks_m = ceil_div(m, rows * tm);
    let blocks_n = ceil_div(n, cols * tn);
    let calls = (blocks_m * blocks_n * ceil_div(k, tk)) as f64;
    let compute_s =
        calls * (tm * tk * tn) as f64 / (p.bf16_macs_per_cycle * p.mac_efficiency) / p.clock_hz;
    let bytes = (m * k * 2 * blocks_n + k * n * 2 * blocks_m + m * n * out_bytes) as u64;
    let ddr_s = bytes as f64 / p.ddr_bytes_per_s;
    (compute_s.max(ddr_s) * 1e9, bytes)
}

/// Array time and bytes of one row-op run.
pub fn rowop_run(p: &NpuParams, kind: &DesignKind, work: Work) -> (f64, u64) {
    let (
        DesignKind::RowOp {
            tiles,
            cycles_per_element,
            in_bytes,
            out_bytes,
        },
        Work::Elements(e),
    ) = (kind, work)
    else {
        return (0.0, 0);
    };
    let compute_s = e as f64 * cycles_per_element / (*tiles.max(&1) as f64 * p.clock_hz);
    let bytes = e * (in_bytes + out_bytes) as u64;
    let ddr_s = bytes as f64 / p.ddr_bytes_per_s;
    (compute_s.max(ddr_s) * 1e9, bytes)
}

impl ForeignSchedule {
    /// An empty schedule.
    pub fn new(name: impl Into<String>, policy: SlotPolicy) -> Self {
        ForeignSchedule {
            name: name.into(),
            designs: Vec::new(),
            steps: Vec::new(),
            policy,
        }
    }

    /// Declares a design; returns its id.
    pub fn design(
        &mut self,
        name: impl Into<String>,
        kind: DesignKind,
        holds_weights: bool,
        bo_bytes: u64,
    ) -> DesignId {
        self.designs.push(Design {
            name: name.into(),
            kind,
            holds_weights,
            bo_bytes,
        });
        self.designs.len() - 1
    }

    /// Host work of `elements` fp32 element passes.
    pub fn host(&mut self, elements: u64, what: impl Into<String>) {
        self.steps.push(Step::Host {
            elements,
            what: what.into(),
        });
    }

    /// One run submitted and waited for, with its syncs.
    pub fn submit(&mut self, design: DesignId, work: Work, sync_in: u64, sync_out: u64) {
        self.runlist(design, vec![work], sync_in, sync_out);
    }

    /// A runlist of runs of one design submitted together and waited for once.
    pub fn runlist(&mut self, design: DesignId, runs: Vec<Work>, sync_in: u64, sync_out: u64) {
        self.steps.push(Step::Submit {
            design,
            runs,
            sync_in,
            sync_out,
        });
    }

    /// Checks that every step names a declared design with work of its kind.
    pub fn validate(&self) -> Result<(), ForeignError> {
        if self.policy.slots == 0 {
            return Err(ForeignError::Invalid(format!(
                "{}: the slot policy holds no context",
                self.name
            )));
        }
        for d in &self.designs {
            let bad = match &d.kind {
                DesignKind::Gemm { tile, .. } => tile.contains(&0),
                DesignKind::RowOp {
                    tiles,
                    cycles_per_element,
                    ..
                } => *tiles == 0 || !(cycles_per_element.is_finite() && *cycles_per_element >= 0.0),
            };
            if bad {
                return Err(ForeignError::Invalid(format!(
                    "design '{}' has a zero tile or an invalid rate",
                    d.name
                )));
            }
        }
        for (i, s) in self.steps.iter().enumerate() {
            let Step::Submit { design, runs, .. } = s else {
                continue;
            };
            let d = self
                .designs
                .get(*design)
                .ok_or(ForeignError::UnknownDesign {
                    step: i,
                    design: *design,
                })?;
            if runs.is_empty() {
                return Err(ForeignError::Invalid(format!("step {i} submits no runs")));
            }
            let fits = runs.iter().all(|w| {
                matches!(
                    (&d.kind, w),
                    (DesignKind::Gemm { .. }, Work::Gemm { .. })
                        | (DesignKind::RowOp { .. }, Work::Elements(_))
                )
            });
            if !fits {
                return Err(ForeignError::WorkMismatch {
                    step: i,
                    design: d.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// The steady-state projection of one pass on `p`: one warm-up pass fills the context
    /// slots (as a host program's warm-up does), the second pass is priced.
    pub fn price(&self, p: &NpuParams) -> Result<ForeignProjection, ForeignError> {
        self.validate()?;
        let mut slots: Vec<DesignId> = Vec::new();
        let mut current: Option<DesignId> = None;
        let mut out = ForeignProjection::default();
        for _pass in 0..2 {
            out = self.pass(p, &mut slots, &mut current);
        }
        Ok(out)
    }

    fn pass(
        &self,
        p: &NpuParams,
        slots: &mut Vec<DesignId>,
        current: &mut Option<DesignId>,
    ) -> ForeignProjection {
        let mut r = ForeignProjection::default();
        let sync_ns = |b: u64| (p.bo_sync_s + b as f64 / p.bo_sync_bytes_per_s) * 1e9;
        for s in &self.steps {
            match s {
                Step::Host { elements, .. } => {
                    r.host_ns += *elements as f64 * p.host_element_s * 1e9
                }
                Step::Submit {
                    design,
                    runs,
                    sync_in,
                    sync_out,
                } => {
                    let d = &self.designs[*design];
                    r.submissions += 1;
                    r.host_ns += p.host_call_s * 1e9;
                    for b in [*sync_in, *sync_out] {
                        if b > 0 {
                            r.host_ns += sync_ns(b);
                            r.sync_bytes += b;
                        }
                    }
                    // Slot policy: a design not holding a context gets one, evicting the
                    // least recently used (designs without weights first, if asked).
                    if let Some(at) = slots.iter().position(|x| x == design) {
                        slots.remove(at);
                    } else {
                        if slots.len() >= self.policy.slots {
                            let victim = slots
                                .iter()
                                .position(|x| {
                                    !self.policy.weights_last || !self.designs[*x].holds_weights
                                })
                                .unwrap_or(0);
                            slots.remove(victim);
                        }
                        r.creates += 1;
                        r.create_ns +=
                            (p.context_create_s + d.bo_bytes as f64 / p.bo_alloc_bytes_per_s) * 1e9;
                        if runs.len() > 1 {
                            // A runlist belongs to its context: its runs are built again
                            // by the host, each with the bookkeeping of one submission.
                            r.create_ns += runs.len() as f64 * p.host_call_s * 1e9;
                        }
                    }
                    slots.push(*design);
                    if current.is_some_and(|c| c != *design) {
                        r.switches += 1;
                        r.switch_ns += p.context_switch_s * 1e9;
                    }
                    *current = Some(*design);
                    for (i, w) in runs.iter().enumerate() {
                        r.runs += 1;
                        r.dispatch_ns += if i == 0 {
                            p.dispatch_s
                        } else {
                            p.runlist_run_s
                        } * 1e9;
                        match &d.kind {
                            DesignKind::Gemm { tile, out_bytes } => {
                                let (ns, b) = gemm_run(p, *tile, *out_bytes, *w);
                                r.compute_ns += ns;
                                r.ddr_bytes += b;
                            }
                            k @ DesignKind::RowOp { .. } => {
                                let (ns, b) = rowop_run(p, k, *w);
                                r.rowop_ns += ns;
                                r.ddr_bytes += b;
                            }
                        }
                    }
                }
            }
        }
        r.total_ns =
            r.compute_ns + r.rowop_ns + r.dispatch_ns + r.switch_ns + r.create_ns + r.host_ns;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemm_design(s: &mut ForeignSchedule, name: &str, weights: bool) -> DesignId {
        s.design(
            name,
            DesignKind::whole_array_gemm([64, 64, 32], 4),
            weights,
            0,
        )
    }

    #[test]
    fn lru_with_weights_last_evicts_the_weightless_design() {
        let mut s = ForeignSchedule::new("lru", SlotPolicy::lru(2, true));
        let w = gemm_design(&mut s, "weights", true);
        let a = gemm_design(&mut s, "a", false);
        let b = gemm_design(&mut s, "b", false);
        let g = Work::Gemm {
            m: 512,
            k: 64,
            n: 128,
        };
        // w a b a b w: with weights last, a and b share the one free slot and miss on
        // every use (4 creations per steady pass); plain LRU evicts w for b and w for a
        // in turn (3 creations: a, b, w).
        for d in [w, a, b, a, b, w] {
            s.submit(d, g, 0, 0);
        }
        let p = s.price(&NpuParams::phoenix()).unwrap();
        assert_eq!((p.creates, p.switches, p.submissions), (4, 5, 6));
        let plain = ForeignSchedule {
            policy: SlotPolicy::lru(2, false),
            ..s.clone()
        };
        assert_eq!(plain.price(&NpuParams::phoenix()).unwrap().creates, 3);
    }

    #[test]
    fn whole_array_gemm_rereads_a_and_b() {
        let p = NpuParams::phoenix();
        let (m, k, n) = (1536, 1536, 384);
        let (_, bytes) = gemm_run(&p, [64, 64, 32], 4, Work::Gemm { m, k, n });
        // A read N/(4·32) = 3 times, B M/(4·64) = 6 times, C written once in f32.
        assert_eq!(bytes, (m * k * 2 * 3 + k * n * 2 * 6 + m * n * 4) as u64);
    }

    #[test]
    fn malformed_schedules_are_typed_errors() {
        let mut s = ForeignSchedule::new("bad", SlotPolicy::lru(6, true));
        s.submit(3, Work::Elements(1), 0, 0);
        assert_eq!(
            s.price(&NpuParams::phoenix()).unwrap_err(),
            ForeignError::UnknownDesign { step: 0, design: 3 }
        );
        let mut s = ForeignSchedule::new("bad", SlotPolicy::lru(6, true));
        let g = gemm_design(&mut s, "g", true);
        s.submit(g, Work::Elements(10), 0, 0);
        assert!(matches!(
            s.price(&NpuParams::phoenix()),
            Err(ForeignError::WorkMismatch { step: 0, .. })
        ));
        let mut s = ForeignSchedule::new("bad", SlotPolicy::lru(0, true));
        gemm_design(&mut s, "g", true);
        assert!(matches!(
            s.price(&NpuParams::phoenix()),
            Err(ForeignError::Invalid(_))
        ));
        let mut s = ForeignSchedule::new("bad", SlotPolicy::lru(6, true));
        let g = gemm_design(&mut s, "g", true);
        s.runlist(g, vec![], 0, 0);
        assert!(s.price(&NpuParams::phoenix()).is_err());
    }
}
