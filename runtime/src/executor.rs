//! The executor: runs the steps of a plan (host nodes, uploads, device segments,
//! downloads) or, without a plan, every node on the host in topological order. Host
//! values live in the host arena of the same memory plan (each in its slot's buffer,
//! given back after its last use); state tensors are kept between runs; the executor
//! measures its own overhead against time in kernels.

use crate::device::{Device, DeviceError, Program, RunContext};
use crate::error::{Result, RuntimeError};
use crate::format::Dim;
use crate::ir::{Graph, ValueSource};
use crate::memory::HostArena;
use crate::op::EvalContext;
use crate::schedule::memory::plan_memory;
use crate::schedule::placement::NodePlacement;
use crate::schedule::{MemoryPlan, Plan, Step};
use crate::tensor::{DType, Tensor};
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
    /// Graph runs repeated on the CPU after a device fault.
    pub fallbacks: usize,
    /// Bytes copied host → device during runs.
    pub bytes_to_device: u64,
    /// Bytes copied device → host during runs.
    pub bytes_from_device: u64,
    /// Host buffers handed out beside the memory plan (0 when execution followed it).
    pub unplanned_buffers: usize,
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
        self.bytes_to_device += o.bytes_to_device;
        self.bytes_from_device += o.bytes_from_device;
        self.unplanned_buffers += o.unplanned_buffers;
    }
}

/// The device side of a planned session.
struct DeviceRun {
    plan: Arc<Plan>,
    program: Box<dyn Program>,
    device: String,
}

/// A graph bound to weights, with its states, its host arena and, when planned for a
/// device, the device's program.
pub struct Session {
    graph: Arc<Graph>,
    /// Per value id: the weight tensor when the value is a weight.
    weights: Vec<Option<Arc<Tensor>>>,
    states: Vec<Tensor>,
    /// What a run executes: the plan's steps, or every node on the host.
    steps: Vec<Step>,
    /// Per step: host values whose last host use is that step.
    free_after: Vec<Vec<usize>>,
    /// Every node on the host (the fallback after a device fault).
    host_steps: Vec<Step>,
    host_free_after: Vec<Vec<usize>>,
    /// The host arena of the steps run (the plan's host memory plan).
    arena: HostArena,
    /// The host arena of every node on the host, made at the first device fault.
    host_arena: Option<HostArena>,
    stats: RunStats,
    device: Option<DeviceRun>,
    /// Label of the next runs for device logs and traces (the transcriber's window).
    window: Option<usize>,
    /// Whether a device fault has been reported (once per session).
    warned_fault: bool,
}

fn input_err(g: &Graph, reason: String) -> RuntimeError {
    RuntimeError::Input {
        graph: g.name.clone(),
        reason,
    }
}

/// Per step, the host values whose last host-side use is that step (graph outputs and
/// weights are kept).
fn free_lists(graph: &Graph, steps: &[Step]) -> Vec<Vec<usize>> {
    let mut last_use: Vec<Option<usize>> = vec![None; graph.values.len()];
    for (pos, step) in steps.iter().enumerate() {
        match *step {
            Step::Host(ni) => {
                let n = &graph.nodes[ni];
                for &v in n.inputs.iter().chain(&n.outputs) {
                    last_use[v] = Some(pos);
                }
            }
            Step::Upload(v) | Step::Download(v) => last_use[v] = Some(pos),
            Step::Segment(_) => {}
        }
    }
    let mut free_after = vec![Vec::new(); steps.len()];
    for (v, lu) in last_use.iter().enumerate() {
        let keep = graph.outputs.contains(&v) || graph.values[v].source == ValueSource::Weight;
        if let (Some(pos), false) = (lu, keep) {
            free_after[*pos].push(v);
        }
    }
    free_after
}

impl Session {
    /// Binds a graph to its weights; every node runs on the host.
    pub fn new(graph: Arc<Graph>, weights: &WeightStore) -> Result<Session> {
        let mut wv = vec![None; graph.values.len()];
        for (id, v) in graph.values.iter().enumerate() {
            if v.source == ValueSource::Weight && graph.is_live_value(id) {
                let Some(t) = weights.get(&v.name) else {
                    // A weight only replaced nodes read is not needed.
                    if !graph.live_nodes().any(|(_, n)| n.inputs.contains(&id)) {
                        continue;
                    }
                    return Err(RuntimeError::Weights {
                        path: "(weight store)".into(),
                        reason: format!(
                            "graph '{}' uses weight '{}' which is not loaded",
                            graph.name, v.name
                        ),
                    });
                };
                if !v.ty.accepts_weight(t) {
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
        let host_steps: Vec<Step> = graph.order.iter().map(|&n| Step::Host(n)).collect();
        let host_free_after = free_lists(&graph, &host_steps);
        let arena = HostArena::from_plan(&graph, &host_memory_plan(&graph));
        Ok(Session {
            graph,
            weights: wv,
            states: Vec::new(),
            steps: host_steps.clone(),
            free_after: host_free_after.clone(),
            host_steps,
            host_free_after,
            arena,
            host_arena: None,
            stats: RunStats::default(),
            device: None,
            window: None,
            warned_fault: false,
        })
    }

    /// Binds a finished plan to its weights and loads the device's part of it: the
    /// device allocates the plan's arena and uploads the weights its nodes read, once.
    pub fn planned(plan: Arc<Plan>, weights: &WeightStore, device: &dyn Device) -> Result<Session> {
        if !plan.is_complete() {
            return Err(input_err(
                &plan.graph,
                format!(
                    "the plan stopped after pass '{}' and cannot run",
                    plan.stopped_after.as_deref().unwrap_or("?")
                ),
            ));
        }
        if device.name() != plan.device {
            return Err(input_err(
                &plan.graph,
                format!(
                    "the plan is for device '{}', not '{}'",
                    plan.device,
                    device.name()
                ),
            ));
        }
        let mut s = Session::new(plan.graph.clone(), weights)?;
        let host_plan = plan
            .memory
            .iter()
            .find(|m| m.device == crate::device::HOST)
            .ok_or_else(|| input_err(&plan.graph, "the plan has no host memory plan".into()))?;
        if plan.segments.is_empty() {
            s.arena = HostArena::from_plan(&plan.graph, host_plan);
            return Ok(s);
        }
        let program = match device.load(&plan, weights) {
            Ok(p) => p,
            // The device cannot take this plan (say its binaries disagree on a value's
            // type): the graph runs on the host, as after a device fault at run time.
            Err(e) => {
                tracing::warn!(
                    "{} cannot load graph '{}' ({e}); it runs on the CPU",
                    device.name(),
                    plan.graph.name
                );
                s.stats.fallbacks += 1;
                return Ok(s);
            }
        };
        s.steps = plan.steps.clone();
        s.free_after = free_lists(&plan.graph, &s.steps);
        // The all-host arena of `Session::new` stays for the fallback after a fault.
        s.host_arena = Some(std::mem::replace(
            &mut s.arena,
            HostArena::from_plan(&plan.graph, host_plan),
        ));
        s.device = Some(DeviceRun {
            plan,
            program,
            device: device.name().to_string(),
        });
        Ok(s)
    }

    /// The plan this session executes, when it has one with device nodes.
    pub fn plan(&self) -> Option<&Arc<Plan>> {
        self.device.as_ref().map(|d| &d.plan)
    }

    /// The graph this session runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Labels the following runs (device call logs and traces name the window).
    pub fn set_window(&mut self, window: Option<usize>) {
        self.window = window;
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
        let all = vec![true; self.graph.outputs.len()];
        let outs = self.run_selected(inputs, &all)?;
        Ok(outs
            .into_iter()
            .map(|t| t.expect("every output was wanted"))
            .collect())
    }

    /// Runs the graph and returns only the outputs marked in `wanted` (in declaration
    /// order); on a device, an output nobody wants is never copied back to the host.
    pub fn run_selected(
        &mut self,
        inputs: &[&Tensor],
        wanted: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        if wanted.len() != self.graph.outputs.len() {
            return Err(input_err(
                &self.graph,
                format!(
                    "{} outputs selected, the graph has {}",
                    wanted.len(),
                    self.graph.outputs.len()
                ),
            ));
        }
        let use_device = self.device.is_some();
        match self.run_on(inputs, use_device, wanted) {
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
                self.run_on(inputs, false, wanted)
            }
            r => r,
        }
    }

    fn run_on(
        &mut self,
        inputs: &[&Tensor],
        use_device: bool,
        wanted: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
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
        // A fallback run (every node on the host) uses the all-host plan's arena.
        let fallback = !use_device && self.device.is_some();
        if fallback {
            let host = self
                .host_arena
                .get_or_insert_with(|| HostArena::from_plan(&g, &host_memory_plan(&g)));
            std::mem::swap(&mut self.arena, host);
        }
        self.arena.begin_run();
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

        let (steps, free_after) = if use_device {
            (
                std::mem::take(&mut self.steps),
                std::mem::take(&mut self.free_after),
            )
        } else {
            (self.host_steps.clone(), self.host_free_after.clone())
        };
        let window = self.window;
        // Graph outputs nobody wants are not downloaded (when no host node reads them).
        let mut skip = vec![false; g.values.len()];
        for (&v, &w) in g.outputs.iter().zip(wanted) {
            skip[v] = !w;
        }
        for step in &steps {
            if let Step::Host(ni) = *step {
                for &v in &g.nodes[ni].inputs {
                    skip[v] = false;
                }
            }
        }
        let result = self.run_steps(
            &g,
            &steps,
            &free_after,
            &mut vals,
            &ext,
            use_device,
            window,
            &skip,
        );
        if use_device {
            self.steps = steps;
            self.free_after = free_after;
        }
        let unplanned = self.arena.unplanned();
        if fallback {
            if let Some(host) = self.host_arena.as_mut() {
                std::mem::swap(&mut self.arena, host);
            }
        }
        let kernel = result?;
        let mut outs = Vec::with_capacity(g.outputs.len());
        for (&v, &w) in g.outputs.iter().zip(wanted) {
            if !w {
                outs.push(None);
                continue;
            }
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
            outs.push(Some(t));
        }
        self.stats.runs += 1;
        self.stats.kernel += kernel;
        self.stats.wall += t0.elapsed();
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.arena.peak_bytes());
        self.stats.unplanned_buffers = unplanned;
        Ok(outs)
    }

    /// Executes `steps`; returns the time spent in kernels and device steps.
    #[allow(clippy::too_many_arguments)]
    fn run_steps(
        &mut self,
        g: &Graph,
        steps: &[Step],
        free_after: &[Vec<usize>],
        vals: &mut [Option<Tensor>],
        ext: &[Option<&Tensor>],
        use_device: bool,
        window: Option<usize>,
        skip_download: &[bool],
    ) -> Result<Duration> {
        let fault = |dev: &str, node: String, e: DeviceError| match e {
            DeviceError::Fault { device, reason } => RuntimeError::DeviceFault {
                graph: g.name.clone(),
                node,
                device,
                reason,
            },
            DeviceError::Kernel(e) => RuntimeError::Exec {
                graph: g.name.clone(),
                node,
                op: dev.to_string(),
                reason: e.0,
            },
        };
        if use_device {
            if let Some(d) = self.device.as_mut() {
                let cx = RunContext {
                    graph: &g.name,
                    window,
                };
                d.program
                    .begin_run(&cx)
                    .map_err(|e| fault(&d.device, "(begin run)".into(), e))?;
            }
        }
        let mut kernel = Duration::ZERO;
        for (pos, step) in steps.iter().enumerate() {
            let tk = Instant::now();
            match *step {
                Step::Host(ni) => self.run_host_node(g, ni, vals, ext)?,
                Step::Upload(v) => {
                    let d = self.device.as_mut().expect("device steps need a device");
                    let t = match (&self.weights[v], ext[v], vals[v].as_ref()) {
                        (Some(w), _, _) => &**w,
                        (None, Some(t), _) => t,
                        (None, None, Some(t)) => t,
                        (None, None, None) => {
                            return Err(input_err(
                                g,
                                format!("value '{}' has no host copy to upload", g.values[v].name),
                            ))
                        }
                    };
                    let _s =
                        tracing::trace_span!("upload", value = g.values[v].name.as_str()).entered();
                    d.program.upload(v, t).map_err(|e| {
                        fault(&d.device, format!("(upload {})", g.values[v].name), e)
                    })?;
                }
                Step::Segment(k) => {
                    let d = self.device.as_mut().expect("device steps need a device");
                    let first = d.plan.segments[k].first().map(|&n| g.nodes[n].name.clone());
                    let _s = tracing::trace_span!("device segment", segment = k).entered();
                    d.program
                        .run_segment(k)
                        .map_err(|e| fault(&d.device, first.unwrap_or_default(), e))?;
                    let e = self
                        .stats
                        .per_op
                        .entry(format!("{} segment", d.device))
                        .or_default();
                    e.0 += 1;
                    e.1 += tk.elapsed();
                }
                Step::Download(v) if skip_download[v] => {}
                Step::Download(v) => {
                    let d = self.device.as_mut().expect("device steps need a device");
                    let _s = tracing::trace_span!("download", value = g.values[v].name.as_str())
                        .entered();
                    let t = d.program.download(v).map_err(|e| {
                        fault(&d.device, format!("(download {})", g.values[v].name), e)
                    })?;
                    if !g.values[v].ty.accepts(&t) {
                        return Err(input_err(
                            g,
                            format!(
                                "device returned {:?} for value '{}'",
                                t.shape(),
                                g.values[v].name
                            ),
                        ));
                    }
                    self.arena.note_alloc(t.bytes());
                    vals[v] = Some(t);
                }
            }
            kernel += tk.elapsed();
            for &v in &free_after[pos] {
                if let Some(t) = vals[v].take() {
                    self.arena.note_free(t.bytes());
                    if let Some(buf) = t.into_f32_lengthened() {
                        self.arena.give(v, buf);
                    }
                }
            }
        }
        if use_device {
            if let Some(d) = self.device.as_mut() {
                let st = d
                    .program
                    .end_run()
                    .map_err(|e| fault(&d.device, "(end run)".into(), e))?;
                self.stats.simulated_ns += st.simulated_ns;
                self.stats.dispatches += st.device_runs;
                self.stats.bytes_to_device += st.bytes_to_device;
                self.stats.bytes_from_device += st.bytes_from_device;
            }
        }
        Ok(kernel)
    }

    fn run_host_node(
        &mut self,
        g: &Graph,
        ni: usize,
        vals: &mut [Option<Tensor>],
        ext: &[Option<&Tensor>],
    ) -> Result<()> {
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
            // The arena's buffers for the node's f32 outputs, in output order.
            let f32_outs: Vec<usize> = node
                .outputs
                .iter()
                .copied()
                .filter(|&v| g.values[v].ty.dtype == DType::F32)
                .collect();
            let buffers = f32_outs.iter().map(|&v| self.arena.take(v)).collect();
            let mut ctx = EvalContext::with_buffers(buffers, &mut node_states);
            let r = node.op.eval(&mut ctx, &ins);
            let unused = ctx.into_unused();
            let first_unused = f32_outs.len() - unused.len();
            for (&v, buf) in f32_outs[first_unused..].iter().zip(unused) {
                self.arena.restore(v, buf);
            }
            r
        };
        let dt = tk.elapsed();
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
            self.arena.note_alloc(t.bytes());
            vals[v] = Some(t);
        }
        Ok(())
    }

    /// Gives graph output `output`'s tensor (by declaration position) back to its slot
    /// of the host arena once the caller is done with it, so the next run reuses it.
    pub fn recycle(&mut self, output: usize, t: Tensor) {
        if let (Some(&v), Some(buf)) = (self.graph.outputs.get(output), t.into_f32_lengthened()) {
            self.arena.give(v, buf);
        }
    }

    /// The host arena's slots and the bytes their buffers hold between runs.
    pub fn host_arena(&self) -> (usize, usize) {
        (self.arena.slots(), self.arena.pooled_bytes())
    }
}

/// The memory plan of `graph` with every node on the host (a session without a plan, and
/// the fallback after a device fault).
fn host_memory_plan(graph: &Graph) -> MemoryPlan {
    let placements: Vec<NodePlacement> = graph
        .nodes
        .iter()
        .map(|n| NodePlacement::host(n, "no device"))
        .collect();
    plan_memory(graph, &placements, &[], &[])
        .into_iter()
        .next()
        .expect("the host always has a memory plan")
}
