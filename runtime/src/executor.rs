//! The CPU executor: runs a validated graph in topological order, frees each
//! intermediate after its last use (its buffer goes back to the pool), keeps state
//! tensors between runs, and measures its own overhead against time spent in kernels.

use crate::device::{Device, DeviceError};
use crate::error::{Result, RuntimeError};
use crate::format::Dim;
use crate::ir::{Graph, ValueSource};
use crate::memory::BufferPool;
use crate::op::EvalContext;
use crate::schedule::Plan;
use crate::tensor::{DType, Data, Tensor};
use crate::weights::WeightStore;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Accumulated measurements of a session's runs.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Number of runs.
    pub runs: usize,
    /// Wall time inside `run`, including input checks and bookkeeping.
    pub wall: Duration,
    /// Time inside operator kernels.
    pub kernel: Duration,
    /// Per op name: node evaluations and kernel time.
    pub per_op: BTreeMap<String, (usize, Duration)>,
    /// Highest bytes of live node outputs during any run (graph inputs are the caller's).
    pub peak_bytes: usize,
    /// Projected device time of the runs (simulated NPU), nanoseconds.
    pub simulated_ns: f64,
    /// Runs submitted to the device.
    pub dispatches: usize,
    /// Device nodes re-run on the CPU after a device fault.
    pub fallbacks: usize,
}

impl RunStats {
    /// Time spent in the executor itself rather than in kernels.
    pub fn overhead(&self) -> Duration {
        self.wall.saturating_sub(self.kernel)
    }

    /// Adds another session's figures.
    pub fn merge(&mut self, o: &RunStats) {
        self.runs += o.runs;
        self.wall += o.wall;
        self.kernel += o.kernel;
        for (k, (n, t)) in &o.per_op {
            let e = self.per_op.entry(k.clone()).or_default();
            e.0 += n;
            e.1 += *t;
        }
        self.peak_bytes = self.peak_bytes.max(o.peak_bytes);
        self.simulated_ns += o.simulated_ns;
        self.dispatches += o.dispatches;
        self.fallbacks += o.fallbacks;
    }
}

/// A graph bound to weights, with its states and buffer pool.
pub struct Session {
    graph: Arc<Graph>,
    /// Per value id: the weight tensor when the value is a weight.
    weights: Vec<Option<Arc<Tensor>>>,
    states: Vec<Tensor>,
    /// Per position in the execution order: values whose last use is that node.
    free_after: Vec<Vec<usize>>,
    pool: BufferPool,
    stats: RunStats,
    /// The device of the plan's NPU nodes, with the plan.
    device: Option<(Box<dyn Device>, Arc<Plan>)>,
    /// Whether a device fault has been reported (once per session).
    warned_fault: bool,
}

fn input_err(g: &Graph, reason: String) -> RuntimeError {
    RuntimeError::Input {
        graph: g.name.clone(),
        reason,
    }
}

impl Session {
    /// Binds a graph to its weights; every weight the graph uses must be in the store.
    pub fn new(graph: Arc<Graph>, weights: &WeightStore) -> Result<Session> {
        let mut wv = vec![None; graph.values.len()];
        for (id, v) in graph.values.iter().enumerate() {
            if v.source == ValueSource::Weight {
                let t = weights.get(&v.name).ok_or_else(|| RuntimeError::Weights {
                    path: "(weight store)".into(),
                    reason: format!(
                        "graph '{}' uses weight '{}' which is not loaded",
                        graph.name, v.name
                    ),
                })?;
                if !v.ty.accepts(t) {
                    return Err(RuntimeError::Weights {
                        path: "(weight store)".into(),
                        reason: format!(
                            "weight '{}' is {}{:?}, graph '{}' expects {}",
                            v.name,
                            t.dtype(),
                            t.shape(),
                            graph.name,
                            v.ty
                        ),
                    });
                }
                wv[id] = Some(t.clone());
            }
        }
        let mut last_use: Vec<Option<usize>> = vec![None; graph.values.len()];
        for (pos, &ni) in graph.order.iter().enumerate() {
            let n = &graph.nodes[ni];
            for &v in n.inputs.iter().chain(&n.outputs) {
                last_use[v] = Some(pos);
            }
        }
        let mut free_after = vec![Vec::new(); graph.order.len()];
        for (v, lu) in last_use.iter().enumerate() {
            let keep = graph.outputs.contains(&v) || graph.values[v].source == ValueSource::Weight;
            if let (Some(pos), false) = (lu, keep) {
                free_after[*pos].push(v);
            }
        }
        Ok(Session {
            graph,
            weights: wv,
            states: Vec::new(),
            free_after,
            pool: BufferPool::new(),
            stats: RunStats::default(),
            device: None,
            warned_fault: false,
        })
    }

    /// Binds a scheduler plan's graph to its weights and the device its NPU nodes run on.
    pub fn planned(
        plan: Arc<Plan>,
        weights: &WeightStore,
        device: Box<dyn Device>,
    ) -> Result<Session> {
        let mut s = Session::new(plan.graph.clone(), weights)?;
        s.device = Some((device, plan));
        Ok(s)
    }

    /// The plan this session executes, when it has one.
    pub fn plan(&self) -> Option<&Arc<Plan>> {
        self.device.as_ref().map(|(_, p)| p)
    }

    /// The graph this session runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// (Re)creates every state tensor as zeros, resolving symbolic dims from `bindings`.
    pub fn reset_states(&mut self, bindings: &HashMap<&str, usize>) -> Result<()> {
        let g = self.graph.clone();
        let mut states = Vec::with_capacity(g.states.len());
        for s in &g.states {
            let mut shape = Vec::with_capacity(s.shape.len());
            for d in &s.shape {
                shape.push(match d {
                    Dim::Known(n) => *n,
                    Dim::Sym(sym) => *bindings.get(sym.as_str()).ok_or_else(|| {
                        input_err(
                            &g,
                            format!("state '{}' needs a value for dimension '{sym}'", s.name),
                        )
                    })?,
                });
            }
            states.push(Tensor::zeros(s.dtype, &shape));
        }
        self.states = states;
        Ok(())
    }

    /// The state tensors, in declaration order (e.g. to reorder a KV cache for beams).
    pub fn states_mut(&mut self) -> &mut [Tensor] {
        &mut self.states
    }

    /// Measurements accumulated since creation or the last [`take_stats`](Self::take_stats).
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// Returns and clears the measurements.
    pub fn take_stats(&mut self) -> RunStats {
        std::mem::take(&mut self.stats)
    }

    /// Runs the graph on inputs given in declaration order (borrowed: large inputs such
    /// as cached cross-attention tensors are not copied); returns the outputs in
    /// declaration order.
    pub fn run(&mut self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let use_device = self.device.is_some();
        match self.run_on(inputs, use_device) {
            // Graphs with state would apply a partial run's updates twice: those report the fault.
            Err(RuntimeError::DeviceFault {
                graph,
                node,
                device,
                reason,
            }) if self.graph.states.is_empty() => {
                // Nothing of the failed run is kept: the whole run is repeated on the CPU,
                // so the result equals a pure CPU run.
                if !self.warned_fault {
                    tracing::warn!("{device} failed on node '{node}' of graph '{graph}' ({reason}); re-running on the CPU");
                    self.warned_fault = true;
                }
                self.stats.fallbacks += 1;
                self.run_on(inputs, false)
            }
            r => r,
        }
    }

    fn run_on(&mut self, inputs: &[&Tensor], use_device: bool) -> Result<Vec<Tensor>> {
        let t0 = Instant::now();
        let g = self.graph.clone();
        let _span = tracing::debug_span!("graph", name = g.name.as_str()).entered();
        if inputs.len() != g.inputs.len() {
            let names: Vec<&str> = g
                .inputs
                .iter()
                .map(|&v| g.values[v].name.as_str())
                .collect();
            return Err(input_err(
                &g,
                format!(
                    "expected {} inputs ({}), got {}",
                    names.len(),
                    names.join(", "),
                    inputs.len()
                ),
            ));
        }
        if self.states.len() != g.states.len() {
            return Err(input_err(
                &g,
                "states are not initialised: call reset_states first".into(),
            ));
        }
        let mut vals: Vec<Option<Tensor>> = vec![None; g.values.len()];
        let mut ext: Vec<Option<&Tensor>> = vec![None; g.values.len()];
        let mut bound: HashMap<&str, usize> = HashMap::new();
        self.pool.reset_peak();
        for (&v, &t) in g.inputs.iter().zip(inputs) {
            let info = &g.values[v];
            if !info.ty.accepts(t) {
                return Err(input_err(
                    &g,
                    format!(
                        "input '{}' must be {}, got {}{:?}",
                        info.name,
                        info.ty,
                        t.dtype(),
                        t.shape()
                    ),
                ));
            }
            for (d, &n) in info.ty.shape.iter().zip(t.shape()) {
                if let Dim::Sym(s) = d {
                    if let Some(&prev) = bound.get(s.as_str()) {
                        if prev != n {
                            return Err(input_err(
                                &g,
                                format!(
                                    "dimension '{s}' is {prev} in one input and {n} in input '{}'",
                                    info.name
                                ),
                            ));
                        }
                    } else {
                        bound.insert(s, n);
                    }
                }
            }
            ext[v] = Some(t);
        }

        let mut kernel = Duration::ZERO;
        for (pos, &ni) in g.order.iter().enumerate() {
            let node = &g.nodes[ni];
            let _nspan = tracing::trace_span!(
                "node",
                name = node.name.as_str(),
                op = node.op_name.as_str()
            )
            .entered();
            let exec_err = |reason: String| RuntimeError::Exec {
                graph: g.name.clone(),
                node: node.name.clone(),
                op: node.op_name.clone(),
                reason,
            };
            let placeholder = || Tensor::zeros(DType::F32, &[0]);
            let mut node_states: Vec<Tensor> = node
                .states
                .iter()
                .map(|&s| std::mem::replace(&mut self.states[s], placeholder()))
                .collect();
            let tk = Instant::now();
            let result = {
                let mut ins: Vec<&Tensor> = Vec::with_capacity(node.inputs.len());
                for &v in &node.inputs {
                    let t = match (&self.weights[v], ext[v]) {
                        (Some(w), _) => &**w,
                        (None, Some(t)) => t,
                        (None, None) => vals[v].as_ref().ok_or_else(|| {
                            exec_err(format!("input '{}' has no value", g.values[v].name))
                        })?,
                    };
                    ins.push(t);
                }
                let mut ctx = EvalContext::new(&mut self.pool, &mut node_states);
                match &mut self.device {
                    Some((dev, plan)) if use_device && plan.on_npu(ni) => {
                        match dev.execute(node, &ins) {
                            Ok(outs) => Ok(outs),
                            Err(DeviceError::Kernel(e)) => Err(e),
                            Err(DeviceError::Fault { device, reason }) => {
                                for (&s, t) in node.states.iter().zip(node_states) {
                                    self.states[s] = t;
                                }
                                return Err(RuntimeError::DeviceFault {
                                    graph: g.name.clone(),
                                    node: node.name.clone(),
                                    device,
                                    reason,
                                });
                            }
                        }
                    }
                    _ => node.op.eval(&mut ctx, &ins),
                }
            };
            let dt = tk.elapsed();
            kernel += dt;
            let e = self.stats.per_op.entry(node.op_name.clone()).or_default();
            e.0 += 1;
            e.1 += dt;
            for (&s, t) in node.states.iter().zip(node_states) {
                self.states[s] = t;
            }
            let outs = result.map_err(|e| exec_err(e.0))?;
            if outs.len() != node.outputs.len() {
                return Err(exec_err(format!(
                    "produced {} outputs, expected {}",
                    outs.len(),
                    node.outputs.len()
                )));
            }
            for (&v, t) in node.outputs.iter().zip(outs) {
                // Catches a kernel that disagrees with its own shape inference.
                if !g.values[v].ty.accepts(&t) {
                    return Err(exec_err(format!(
                        "output '{}' is {}{:?} but shape inference promised {}",
                        g.values[v].name,
                        t.dtype(),
                        t.shape(),
                        g.values[v].ty
                    )));
                }
                if t.dtype() != DType::F32 {
                    self.pool.note_alloc(t.bytes());
                }
                vals[v] = Some(t);
            }
            for &v in &self.free_after[pos] {
                if let Some(t) = vals[v].take() {
                    let bytes = t.bytes();
                    match t.into_data() {
                        Data::F32(buf) => self.pool.give(buf, bytes),
                        _ => self.pool.note_free(bytes),
                    }
                }
            }
        }
        let mut outs = Vec::with_capacity(g.outputs.len());
        for &v in &g.outputs {
            let t = match (&self.weights[v], ext[v], vals[v].take()) {
                (Some(w), _, _) => (**w).clone(),
                (None, Some(t), _) => t.clone(),
                (None, None, Some(t)) => t,
                (None, None, None) => {
                    return Err(input_err(
                        &g,
                        format!("output '{}' was not computed", g.values[v].name),
                    ))
                }
            };
            outs.push(t);
        }
        if let (Some((_, plan)), true) = (&self.device, use_device) {
            if plan.device == "npu-sim" && plan.params.is_some() {
                self.stats.simulated_ns += plan.timeline.total_ns;
                self.stats.dispatches += plan.timeline.dispatches;
                crate::trace::record_device_run(&g.name, &plan.timeline, t0);
            }
        }
        self.stats.runs += 1;
        self.stats.kernel += kernel;
        self.stats.wall += t0.elapsed();
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.pool.peak_bytes());
        Ok(outs)
    }

    /// Gives an output tensor's buffer back to the pool once the caller is done with it.
    pub fn recycle(&mut self, t: Tensor) {
        // Outputs stop counting as live when a run ends, so nothing to subtract here.
        if let Data::F32(buf) = t.into_data() {
            self.pool.give(buf, 0);
        }
    }
}
