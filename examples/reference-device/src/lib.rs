//! `reference`: a device defined outside the runtime, through the runtime's public device
//! interface only. It runs four catalogue kernels (`matmul_bias`, `layer_norm`, `gelu`,
//! `residual_add`, offered by the standard `linear`, `layer_norm`, `gelu` and `add`) with
//! their bit-exact references, keeps its values in its own memory laid out by the plan's
//! memory pass, uploads the weights its nodes read once at load, and counts what each run
//! moved. Every other node stays on the host, with the reason.

use amanuensis_runtime::device::{
    all_static, Device, DeviceEntry, DeviceError, DeviceRegistry, DeviceStatus, NodeView, Program,
    ProgramRunStats, RunContext, Support,
};
use amanuensis_runtime::ir::ValueSource;
use amanuensis_runtime::npu::{kernel_of, NpuKernel};
use amanuensis_runtime::schedule::Plan;
use amanuensis_runtime::{DType, OpError, Tensor, WeightStore};
use std::collections::HashMap;
use std::sync::Arc;

/// The device's name (`--device reference`).
pub const NAME: &str = "reference";

/// The catalogue kernels it runs.
pub const KERNELS: [&str; 4] = ["matmul_bias", "layer_norm", "gelu", "residual_add"];

/// Registers `reference` (no configuration).
pub fn register(reg: &mut DeviceRegistry) -> Result<(), String> {
    reg.register(DeviceEntry::new(
        NAME,
        "catalogue references in plan-laid-out memory (an out-of-tree device example)",
        || DeviceStatus::available(vec![format!("kernels: {}", KERNELS.join(", "))]),
        |config| match config {
            "" => Ok(Arc::new(ReferenceDevice) as Arc<dyn Device>),
            c => Err(format!("takes no configuration, got '{c}'")),
        },
    ))
}

/// The device: stateless, one instance per process.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReferenceDevice;

/// The kernel of a node this device runs, or why it does not run it.
fn kernel_for<'a>(node: &NodeView<'a>) -> Result<&'a dyn NpuKernel, String> {
    let k = match kernel_of(node.op) {
        Ok(Some(k)) => k,
        Ok(None) => return Err(format!("op '{}' offers no catalogue kernel", node.op_name)),
        Err(e) => return Err(format!("op '{}': {e}", node.op_name)),
    };
    if !KERNELS.contains(&k.name()) {
        return Err(format!(
            "kernel '{}' is not one of this device's ({})",
            k.name(),
            KERNELS.join(", ")
        ));
    }
    if node.stateful {
        return Err("node keeps state between runs (host-resident)".into());
    }
    // Buffers are laid out at plan time, so every size must be known then.
    if !all_static(node.inputs) || !all_static(node.outputs) {
        return Err("shapes are not static (buffers are laid out when planning)".into());
    }
    if node
        .inputs
        .iter()
        .chain(node.outputs)
        .any(|t| t.dtype != DType::F32)
    {
        return Err("the device holds f32 values only".into());
    }
    k.check(node.inputs)
        .map_err(|r| format!("kernel '{}' rejects these inputs: {r}", k.name()))?;
    Ok(k)
}

impl Device for ReferenceDevice {
    fn name(&self) -> &str {
        NAME
    }

    fn supports(&self, node: &NodeView) -> Support {
        match kernel_for(node) {
            Ok(k) => Support::Yes {
                kernel: k.name().to_string(),
            },
            Err(reason) => Support::No { reason },
        }
    }

    fn load(
        &self,
        plan: &Arc<Plan>,
        weights: &WeightStore,
    ) -> Result<Box<dyn Program>, DeviceError> {
        Ok(Box::new(ReferenceProgram::load(plan.clone(), weights)?))
    }
}

fn fault(reason: String) -> DeviceError {
    DeviceError::Fault {
        device: NAME.into(),
        reason,
    }
}

/// Where a value lives in one of the device's memories (f32 words).
#[derive(Debug, Clone)]
struct Buffer {
    offset: usize,
    shape: Vec<usize>,
}

impl Buffer {
    fn words(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.shape.iter().product::<usize>()
    }
}

/// The device's part of one plan.
#[derive(Debug)]
pub struct ReferenceProgram {
    plan: Arc<Plan>,
    /// Values of the device nodes, at the plan's offsets.
    arena: Vec<f32>,
    buffers: HashMap<usize, Buffer>,
    /// The weights the device nodes read, copied in at load.
    weight_memory: Vec<f32>,
    weight_buffers: HashMap<usize, Buffer>,
    load_bytes: u64,
    run: ProgramRunStats,
}

impl ReferenceProgram {
    /// Allocates the plan's arena for this device and uploads the device nodes' weights.
    pub fn load(plan: Arc<Plan>, weights: &WeightStore) -> Result<ReferenceProgram, DeviceError> {
        let g = plan.graph.clone();
        let static_shape = |v: usize| -> Result<Vec<usize>, DeviceError> {
            let ty = &g.values[v].ty;
            if ty.dtype != DType::F32 {
                return Err(fault(format!(
                    "value '{}' is {}, not f32",
                    g.values[v].name, ty.dtype
                )));
            }
            ty.shape
                .iter()
                .map(|d| d.known())
                .collect::<Option<_>>()
                .ok_or_else(|| fault(format!("value '{}' has a symbolic shape", g.values[v].name)))
        };
        let mut buffers = HashMap::new();
        let mut arena_words = 0;
        if let Some(mem) = plan.memory.iter().find(|m| m.device == NAME) {
            arena_words = (mem.arena_bytes / 4) as usize;
            for (name, offset, size) in &mem.buffers {
                let v = g
                    .values
                    .iter()
                    .position(|x| &x.name == name)
                    .ok_or_else(|| fault(format!("memory plan names unknown value '{name}'")))?;
                let b = Buffer {
                    offset: (*offset / 4) as usize,
                    shape: static_shape(v)?,
                };
                if (b.words().len() * 4) as u64 > *size || b.words().end > arena_words {
                    return Err(fault(format!("value '{name}' does not fit its slot")));
                }
                buffers.insert(v, b);
            }
        }
        let (mut weight_memory, mut weight_buffers) = (Vec::new(), HashMap::new());
        for &ni in plan.segments.iter().flatten() {
            let n = &g.nodes[ni];
            if !kernel_of(n.op.as_ref())
                .is_ok_and(|k| k.is_some_and(|k| KERNELS.contains(&k.name())))
            {
                return Err(fault(format!(
                    "node '{}' has no kernel of this device",
                    n.name
                )));
            }
            for &v in &n.inputs {
                if g.values[v].source != ValueSource::Weight || weight_buffers.contains_key(&v) {
                    continue;
                }
                let t = weights
                    .get(&g.values[v].name)
                    .ok_or_else(|| fault(format!("weight '{}' is not loaded", g.values[v].name)))?;
                let b = Buffer {
                    offset: weight_memory.len(),
                    shape: static_shape(v)?,
                };
                if t.shape() != b.shape.as_slice() {
                    return Err(fault(format!(
                        "weight '{}' is {:?}",
                        g.values[v].name,
                        t.shape()
                    )));
                }
                weight_memory.extend_from_slice(t.f32s()?);
                weight_buffers.insert(v, b);
            }
        }
        Ok(ReferenceProgram {
            plan,
            arena: vec![0.0; arena_words],
            buffers,
            load_bytes: weight_memory.len() as u64 * 4,
            weight_memory,
            weight_buffers,
            run: ProgramRunStats::default(),
        })
    }

    /// Bytes of weights uploaded at load.
    pub fn load_bytes(&self) -> u64 {
        self.load_bytes
    }

    /// A host copy of a device value or weight.
    fn read(&self, v: usize) -> Result<Tensor, DeviceError> {
        let (mem, b) = match (self.weight_buffers.get(&v), self.buffers.get(&v)) {
            (Some(b), _) => (&self.weight_memory, b),
            (None, Some(b)) => (&self.arena, b),
            (None, None) => return Err(self.unplaced(v)),
        };
        Ok(Tensor::from_f32(&b.shape, mem[b.words()].to_vec())?)
    }

    fn write(&mut self, v: usize, t: &Tensor) -> Result<(), DeviceError> {
        let b = self.buffers.get(&v).ok_or_else(|| self.unplaced(v))?;
        if t.shape() != b.shape.as_slice() {
            return Err(OpError(format!(
                "value '{}' is {:?}, its device buffer holds {:?}",
                self.plan.graph.values[v].name,
                t.shape(),
                b.shape
            ))
            .into());
        }
        let words = b.words();
        self.arena[words].copy_from_slice(t.f32s()?);
        Ok(())
    }

    fn unplaced(&self, v: usize) -> DeviceError {
        let name = self
            .plan
            .graph
            .values
            .get(v)
            .map_or("?", |x| x.name.as_str());
        fault(format!("value '{name}' has no buffer in the device memory"))
    }
}

impl Program for ReferenceProgram {
    fn begin_run(&mut self, _cx: &RunContext) -> Result<(), DeviceError> {
        // A run that failed part-way never reached `end_run`: its counts are dropped.
        self.run = ProgramRunStats::default();
        Ok(())
    }

    fn upload(&mut self, value: usize, tensor: &Tensor) -> Result<(), DeviceError> {
        self.write(value, tensor)?;
        self.run.bytes_to_device += tensor.bytes() as u64;
        Ok(())
    }

    fn run_segment(&mut self, segment: usize) -> Result<(), DeviceError> {
        let plan = self.plan.clone();
        let seg = plan
            .segments
            .get(segment)
            .ok_or_else(|| fault(format!("the plan has no segment {segment}")))?;
        for &ni in seg {
            let n = &plan.graph.nodes[ni];
            let k = kernel_of(n.op.as_ref())
                .map_err(fault)?
                .ok_or_else(|| fault(format!("node '{}' has no catalogue kernel", n.name)))?;
            let ins = n
                .inputs
                .iter()
                .map(|&v| self.read(v))
                .collect::<Result<Vec<_>, _>>()?;
            let outs = k.eval(&ins.iter().collect::<Vec<_>>())?;
            if outs.len() != n.outputs.len() {
                return Err(OpError(format!(
                    "kernel '{}' gave {} outputs, node '{}' has {}",
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
            self.run.device_runs += 1;
        }
        Ok(())
    }

    fn download(&mut self, value: usize) -> Result<Tensor, DeviceError> {
        let t = self.read(value)?;
        self.run.bytes_from_device += t.bytes() as u64;
        Ok(t)
    }

    fn end_run(&mut self) -> Result<ProgramRunStats, DeviceError> {
        Ok(std::mem::take(&mut self.run))
    }
}
