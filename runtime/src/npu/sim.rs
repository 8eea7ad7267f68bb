//! `npu-sim`: a timing model of the Ryzen AI NPU. Its program keeps device values in an
//! arena laid out by the plan's memory pass, runs each node with its kernel's bit-exact
//! reference (so outputs are real numbers), and replays the commands it actually issued
//! (syncs, runs, context switches) on virtual clocks to give the projected time. Its
//! times are projections and are always labelled so.

use super::lowering::{NpuLowering, TilingPass};
use super::timeline::{self, Command, HostCommand};
use super::{kernel_of, node_cost_ns, npu_support, NpuOptions, NpuParams};
use crate::device::{Device, DeviceError, NodeView, Program, ProgramRunStats, RunContext, Support};
use crate::error::OpError;
use crate::ir::ValueSource;
use crate::schedule::transfers::value_bytes;
use crate::schedule::{Pass, Plan, Step};
use crate::tensor::{DType, Tensor};
use crate::weights::WeightStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// The simulated NPU device.
#[derive(Debug, Clone)]
pub struct NpuSim {
    params: NpuParams,
    options: NpuOptions,
}

impl NpuSim {
    /// A simulator with one parameter set and every scheduling feature on.
    pub fn new(params: NpuParams) -> Self {
        NpuSim {
            params,
            options: NpuOptions::default(),
        }
    }

    /// A simulator scheduling with `options` (the ablation's rungs).
    pub fn with_options(params: NpuParams, options: NpuOptions) -> Self {
        NpuSim { params, options }
    }

    /// Its parameters.
    pub fn params(&self) -> &NpuParams {
        &self.params
    }

    /// Its scheduling options.
    pub fn options(&self) -> &NpuOptions {
        &self.options
    }
}

impl Device for NpuSim {
    fn name(&self) -> &str {
        "npu-sim"
    }

    fn supports(&self, node: &NodeView) -> Support {
        npu_support(node)
    }

    fn cost_ns(&self, node: &NodeView) -> Option<f64> {
        node_cost_ns(node, &self.params, &self.options)
    }

    fn lowering_passes(&self) -> Vec<Box<dyn Pass>> {
        vec![Box::new(TilingPass {
            params: self.params.clone(),
            options: self.options,
            xclbin_of: None,
        })]
    }

    fn load(
        &self,
        plan: &Arc<Plan>,
        weights: &WeightStore,
    ) -> Result<Box<dyn Program>, DeviceError> {
        Ok(Box::new(SimProgram::load(plan.clone(), weights)?))
    }
}

/// Where a device value lives in the arena.
#[derive(Debug, Clone)]
struct Slot {
    offset: usize,
    shape: Vec<usize>,
}

/// The simulator's program of one plan.
pub struct SimProgram {
    plan: Arc<Plan>,
    lowering: Arc<NpuLowering>,
    /// Device memory, f32 words, laid out by the plan's memory pass.
    arena: Vec<f32>,
    slots: HashMap<usize, Slot>,
    /// Weights the device nodes read, "uploaded" once at load.
    weights: HashMap<usize, Arc<Tensor>>,
    /// Bytes uploaded at load.
    load_bytes: u64,
    issued: Vec<Command>,
    started: Option<(Instant, String)>,
    last_timeline: timeline::Timeline,
}

fn fault(reason: String) -> DeviceError {
    DeviceError::Fault {
        device: "npu-sim".into(),
        reason,
    }
}

impl SimProgram {
    /// Allocates the arena of the plan's device memory plan and takes the weights.
    pub fn load(plan: Arc<Plan>, weights: &WeightStore) -> Result<SimProgram, DeviceError> {
        let lowering = plan
            .lowering
            .clone()
            .and_then(|l| l.downcast::<NpuLowering>().ok())
            .ok_or_else(|| {
                fault("the plan has no NPU lowering (planned for another device?)".into())
            })?;
        let g = &plan.graph;
        let mem = plan.memory.iter().find(|m| m.device == plan.device);
        let mut slots = HashMap::new();
        let mut arena_words = 0usize;
        if let Some(mem) = mem {
            arena_words = (mem.arena_bytes / 4) as usize;
            for (name, off, size) in &mem.buffers {
                let v = g
                    .values
                    .iter()
                    .position(|x| &x.name == name)
                    .ok_or_else(|| fault(format!("memory plan names unknown value '{name}'")))?;
                let ty = &g.values[v].ty;
                if ty.dtype != DType::F32 {
                    return Err(fault(format!(
                        "value '{name}' is {}, the device holds f32",
                        ty.dtype
                    )));
                }
                let shape: Vec<usize> =
                    ty.shape
                        .iter()
                        .map(|d| d.known())
                        .collect::<Option<_>>()
                        .ok_or_else(|| fault(format!("value '{name}' has a symbolic shape")))?;
                if value_bytes(g, v) > *size {
                    return Err(fault(format!("value '{name}' does not fit its arena slot")));
                }
                slots.insert(
                    v,
                    Slot {
                        offset: (*off / 4) as usize,
                        shape,
                    },
                );
            }
        }
        let mut wmap = HashMap::new();
        let mut load_bytes = 0u64;
        for seg in &plan.segments {
            for &ni in seg {
                for &v in &g.nodes[ni].inputs {
                    if g.values[v].source == ValueSource::Weight && !wmap.contains_key(&v) {
                        let t = weights.get(&g.values[v].name).ok_or_else(|| {
                            fault(format!("weight '{}' is not loaded", g.values[v].name))
                        })?;
                        load_bytes += t.bytes() as u64;
                        wmap.insert(v, t.clone());
                    }
                }
            }
        }
        Ok(SimProgram {
            plan,
            lowering,
            arena: vec![0.0; arena_words],
            slots,
            weights: wmap,
            load_bytes,
            issued: Vec::new(),
            started: None,
            last_timeline: Default::default(),
        })
    }

    /// Bytes of weights uploaded at load.
    pub fn load_bytes(&self) -> u64 {
        self.load_bytes
    }

    /// The commands issued by the last finished run.
    pub fn last_timeline(&self) -> &timeline::Timeline {
        &self.last_timeline
    }

    fn slot(&self, v: usize) -> Result<&Slot, DeviceError> {
        self.slots.get(&v).ok_or_else(|| {
            fault(format!(
                "value '{}' has no buffer in the device arena",
                self.plan.graph.values[v].name
            ))
        })
    }

    fn read(&self, v: usize) -> Result<Tensor, DeviceError> {
        let s = self.slot(v)?;
        let n: usize = s.shape.iter().product();
        Ok(Tensor::from_f32(
            &s.shape,
            self.arena[s.offset..s.offset + n].to_vec(),
        )?)
    }

    fn write(&mut self, v: usize, t: &Tensor) -> Result<(), DeviceError> {
        let s = self.slot(v)?.clone();
        if t.shape() != s.shape.as_slice() {
            return Err(OpError(format!(
                "value '{}' is {:?}, its device buffer holds {:?}",
                self.plan.graph.values[v].name,
                t.shape(),
                s.shape
            ))
            .into());
        }
        let src = t.f32s_widened()?;
        self.arena[s.offset..s.offset + src.len()].copy_from_slice(&src);
        Ok(())
    }
}

impl Program for SimProgram {
    fn begin_run(&mut self, cx: &RunContext) -> Result<(), DeviceError> {
        self.issued.clear();
        self.started = Some((Instant::now(), cx.graph.to_string()));
        Ok(())
    }

    fn upload(&mut self, value: usize, tensor: &Tensor) -> Result<(), DeviceError> {
        self.write(value, tensor)?;
        let plan = self.plan.clone();
        self.lowering
            .step_commands(&plan, Step::Upload(value), &mut self.issued);
        Ok(())
    }

    fn run_segment(&mut self, segment: usize) -> Result<(), DeviceError> {
        let plan = self.plan.clone();
        let g = &plan.graph;
        let seg = plan
            .segments
            .get(segment)
            .ok_or_else(|| fault(format!("no segment {segment}")))?;
        for &ni in seg {
            let n = &g.nodes[ni];
            let k = kernel_of(n.op.as_ref())
                .map_err(fault)?
                .ok_or_else(|| fault(format!("node '{}' has no NPU kernel", n.name)))?;
            let mut owned: Vec<Tensor> = Vec::new();
            let mut which: Vec<Result<usize, Arc<Tensor>>> = Vec::new();
            for &v in &n.inputs {
                if let Some(w) = self.weights.get(&v) {
                    which.push(Err(w.clone()));
                } else {
                    owned.push(self.read(v)?);
                    which.push(Ok(owned.len() - 1));
                }
            }
            let ins: Vec<&Tensor> = which
                .iter()
                .map(|w| match w {
                    Ok(i) => &owned[*i],
                    Err(t) => &**t,
                })
                .collect();
            let outs = k.eval(&ins)?;
            if outs.len() != n.outputs.len() {
                return Err(OpError(format!(
                    "kernel '{}' produced {} outputs, node '{}' has {}",
                    k.name(),
                    outs.len(),
                    n.name,
                    n.outputs.len()
                ))
                .into());
            }
            for (&v, t) in n.outputs.iter().zip(&outs) {
                self.write(v, t)?;
            }
        }
        self.lowering
            .step_commands(&plan, Step::Segment(segment), &mut self.issued);
        Ok(())
    }

    fn download(&mut self, value: usize) -> Result<Tensor, DeviceError> {
        let t = self.read(value)?;
        let plan = self.plan.clone();
        self.lowering
            .step_commands(&plan, Step::Download(value), &mut self.issued);
        Ok(t)
    }

    fn end_run(&mut self) -> Result<ProgramRunStats, DeviceError> {
        let low = &self.lowering;
        let tl = timeline::simulate(&self.issued, &low.params, &low.options.queue(&low.params));
        let mut stats = ProgramRunStats {
            device_runs: tl.dispatches,
            simulated_ns: tl.total_ns,
            ..Default::default()
        };
        for c in &self.issued {
            match c {
                Command::Host(HostCommand::SyncToDevice { bytes, .. }) => {
                    stats.bytes_to_device += bytes
                }
                Command::Host(HostCommand::SyncToHost { bytes, .. }) => {
                    stats.bytes_from_device += bytes
                }
                _ => {}
            }
        }
        if let Some((t0, graph)) = self.started.take() {
            super::trace::record_simulated_run(&graph, &tl, t0);
        }
        self.last_timeline = tl;
        Ok(stats)
    }
}
