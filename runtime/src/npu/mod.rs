//! The NPU device family (AMD XDNA): the hardware description, the kernel contract its
//! devices run ([`NpuKernel`], offered by ops through [`Operator::kernel`] with target
//! [`TARGET`]), the placement rule, the tiling and pipelining pass, the timing model and
//! the simulated device `npu-sim`. The real device over XRT (crate `amanuensis-xrt`) and
//! any other device of the family build on this module; the runtime's core does not use it.

pub mod foreign;
mod hardware;
mod kernel;
mod lowering;
pub mod sim;
pub mod timeline;
pub mod trace;

pub use hardware::{
    NpuParams, BO_ALLOC_BYTES_PER_S, HOST_CALL_S, HOST_ELEMENT_S, PHOENIX_DDR_BYTES_PER_S,
};
pub use kernel::{KernelWork, NpuCaps, NpuKernel, TileWork};
pub use lowering::{NodeLowering, NpuLowering, TilingPass};
pub use sim::NpuSim;

use crate::device::{all_static, NodeView, Support};
use crate::op::Operator;
use std::any::Any;
use timeline::{Command, DispatchCommand, QueueConfig};

/// The target name NPU kernels are offered under ([`Operator::kernel`]).
pub const TARGET: &str = "npu";

/// The object an op offers for [`TARGET`]: a catalogue kernel, static or owned.
///
/// ```
/// use amanuensis_runtime::npu::{NpuBinding, NpuKernel};
/// # use amanuensis_runtime::npu::{KernelWork, NpuCaps};
/// # use amanuensis_runtime::{OpError, Tensor, ValueType};
/// # #[derive(Debug)] struct MyKernel;
/// # impl NpuKernel for MyKernel {
/// #     fn name(&self) -> &str { "my_kernel" }
/// #     fn check(&self, _: &[ValueType]) -> Result<(), String> { Ok(()) }
/// #     fn work(&self, _: &[ValueType], _: &NpuCaps) -> KernelWork { unimplemented!() }
/// #     fn eval(&self, _: &[&Tensor]) -> Result<Vec<Tensor>, OpError> { Ok(vec![]) }
/// # }
/// static MY_KERNEL: NpuBinding = NpuBinding::of(&MyKernel);
/// // in `impl Operator`:
/// // fn kernel(&self, target: &str) -> Option<&(dyn Any + Send + Sync)> { MY_KERNEL.offer(target) }
/// assert!(MY_KERNEL.offer("npu").is_some() && MY_KERNEL.offer("gpu").is_none());
/// ```
pub enum NpuBinding {
    /// A kernel without configuration.
    Static(&'static dyn NpuKernel),
    /// A kernel configured for one node (say a convolution's stride).
    Owned(Box<dyn NpuKernel>),
}

impl std::fmt::Debug for NpuBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NpuBinding({})", self.kernel().name())
    }
}

impl NpuBinding {
    /// A binding of a static kernel (usable in a `static`).
    pub const fn of(kernel: &'static dyn NpuKernel) -> Self {
        NpuBinding::Static(kernel)
    }

    /// A binding owning its kernel.
    pub fn owned(kernel: impl NpuKernel + 'static) -> Self {
        NpuBinding::Owned(Box::new(kernel))
    }

    /// The kernel.
    pub fn kernel(&self) -> &dyn NpuKernel {
        match self {
            NpuBinding::Static(k) => *k,
            NpuBinding::Owned(k) => k.as_ref(),
        }
    }

    /// What an op's [`Operator::kernel`] returns: this binding for [`TARGET`], else none.
    pub fn offer(&self, target: &str) -> Option<&(dyn Any + Send + Sync)> {
        (target == TARGET).then_some(self as &(dyn Any + Send + Sync))
    }
}

/// The NPU kernel an op offers, `Ok(None)` when it offers none, or an error when it
/// offers an object of another type (a binding bug the plan reports loudly).
pub fn kernel_of(op: &dyn Operator) -> Result<Option<&dyn NpuKernel>, String> {
    match op.kernel(TARGET) {
        None => Ok(None),
        Some(k) => k
            .downcast_ref::<NpuBinding>()
            .map(|b| Some(b.kernel()))
            .ok_or_else(|| {
                "the op offers an object for target 'npu' that is not an NpuBinding (from a \
                 plugin built against another build of amanuensis-runtime?)"
                    .to_string()
            }),
    }
}

/// The placement rule shared by the NPU devices: the op must offer an NPU kernel, the
/// node's shapes must be static, and the kernel must accept them.
pub fn npu_support(node: &NodeView) -> Support {
    let k = match kernel_of(node.op) {
        Ok(Some(k)) => k,
        Ok(None) => {
            return Support::No {
                reason: format!("no NPU kernel for op '{}'", node.op_name),
            }
        }
        Err(e) => {
            return Support::No {
                reason: format!("op '{}': {e}", node.op_name),
            }
        }
    };
    if !all_static(node.inputs) || !all_static(node.outputs) {
        return Support::No {
            reason: "shapes are not static (NPU schedules are compiled per shape)".into(),
        };
    }
    if node.stateful {
        return Support::No {
            reason: "node keeps state between runs (host-resident)".into(),
        };
    }
    match k.check(node.inputs) {
        Ok(()) => Support::Yes {
            kernel: k.name().to_string(),
        },
        Err(reason) => Support::No {
            reason: format!("kernel '{}' rejects these inputs: {reason}", k.name()),
        },
    }
}

/// How an NPU device schedules its runs: each switch is one rung of the ablation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NpuOptions {
    /// Columns to use (capped by the device's).
    pub columns: usize,
    /// Ping/pong buffers so DMA overlaps compute.
    pub double_buffer: bool,
    /// The seed design: one run per column step with a host round trip each.
    pub dispatch_per_tile: bool,
    /// Submit a segment's runs together (a runlist) rather than each on its own.
    pub runlists: bool,
    /// One xclbin (hardware context) per op kind instead of one for all kernels, so a
    /// change of op between runs switches contexts.
    pub xclbin_per_op: bool,
}

impl Default for NpuOptions {
    fn default() -> Self {
        NpuOptions {
            columns: usize::MAX,
            double_buffer: true,
            dispatch_per_tile: false,
            runlists: true,
            xclbin_per_op: false,
        }
    }
}

impl NpuOptions {
    /// The seed prototypes' design: a host round trip per tile, one column, single
    /// buffers, each run on its own.
    pub fn seed() -> Self {
        NpuOptions {
            columns: 1,
            double_buffer: false,
            dispatch_per_tile: true,
            runlists: false,
            xclbin_per_op: false,
        }
    }

    /// The queue configuration of the timing model.
    pub fn queue(&self, p: &NpuParams) -> QueueConfig {
        QueueConfig {
            columns: self.columns.clamp(1, p.columns),
            depth: if self.double_buffer { 2 } else { 1 },
            synchronous: self.dispatch_per_tile,
        }
    }
}

/// Projected time of one node as a single isolated run (the fusion pass's score).
pub fn estimate_node_ns(work: &KernelWork, p: &NpuParams, opts: &NpuOptions) -> f64 {
    let cmd = Command::Dispatch(DispatchCommand {
        node: String::new(),
        kernel: String::new(),
        work: work.clone(),
        steps: (0, work.steps),
        chained: false,
        context: String::new(),
    });
    let mut q = opts.queue(p);
    q.synchronous = true;
    timeline::simulate(std::slice::from_ref(&cmd), p, &q).total_ns
}

/// The cost model of an NPU device: the node's kernel work priced as one isolated run.
pub fn node_cost_ns(node: &NodeView, p: &NpuParams, opts: &NpuOptions) -> Option<f64> {
    let k = kernel_of(node.op).ok()??;
    k.check(node.inputs).ok()?;
    // Whisper's layers repeat the same few nodes, and pricing one simulates its tiles: the
    // fusion pass asks for the same prices over and over, so they are kept (per kernel,
    // attributes, input types, parameters and options; a pure function of those).
    let key = format!(
        "{}|{:?}|{:?}|{:?}|{:?}",
        k.name(),
        node.attrs,
        node.inputs,
        p,
        opts
    );
    let mut cache = COST_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&ns) = cache.get(&key) {
        return Some(ns);
    }
    let ns = estimate_node_ns(&k.work(node.inputs, &p.caps()), p, opts);
    if cache.len() >= COST_CACHE_ENTRIES {
        cache.clear();
    }
    cache.insert(key, ns);
    Some(ns)
}

/// Prices [`node_cost_ns`] has computed, by node kind, shapes and configuration.
static COST_CACHE: std::sync::Mutex<std::collections::BTreeMap<String, f64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Most prices kept at once (a few hundred kinds of nodes per model).
const COST_CACHE_ENTRIES: usize = 4096;

/// The configuration string of an NPU device (`phoenix`, `strix,columns=2,runlists=0`):
/// the parameter set, then the [`NpuOptions`] that differ from the defaults.
pub fn config_string(p: &NpuParams, o: &NpuOptions) -> String {
    let d = NpuOptions::default();
    let mut s = p.name.to_string();
    if o.columns != d.columns {
        s.push_str(&format!(",columns={}", o.columns));
    }
    let flags = [
        ("double_buffer", o.double_buffer, d.double_buffer),
        (
            "dispatch_per_tile",
            o.dispatch_per_tile,
            d.dispatch_per_tile,
        ),
        ("runlists", o.runlists, d.runlists),
        ("xclbin_per_op", o.xclbin_per_op, d.xclbin_per_op),
    ];
    for (k, v, dv) in flags {
        if v != dv {
            s.push_str(&format!(",{k}={}", u8::from(v)));
        }
    }
    s
}

/// Parses [`config_string`]; an empty string is Phoenix with the defaults.
pub fn parse_config(s: &str) -> Result<(NpuParams, NpuOptions), String> {
    let mut parts = s.split(',').filter(|p| !p.is_empty());
    let name = parts.next().unwrap_or("phoenix");
    let p = NpuParams::by_name(name)
        .ok_or_else(|| format!("unknown NPU parameter set '{name}' (phoenix, strix)"))?;
    let mut o = NpuOptions::default();
    for kv in parts {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("'{kv}' is not key=value"))?;
        let flag = || match v {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err(format!("{k}: '{v}' is not 0 or 1")),
        };
        match k {
            "columns" => {
                o.columns = v
                    .parse()
                    .ok()
                    .filter(|&c| c >= 1 && c <= p.columns)
                    .ok_or_else(|| {
                        format!("columns must be between 1 and {} for {}", p.columns, p.name)
                    })?
            }
            "double_buffer" => o.double_buffer = flag()?,
            "dispatch_per_tile" => o.dispatch_per_tile = flag()?,
            "runlists" => o.runlists = flag()?,
            "xclbin_per_op" => o.xclbin_per_op = flag()?,
            _ => return Err(format!("unknown NPU option '{k}'")),
        }
    }
    Ok((p, o))
}

/// Registers `npu-sim` (configuration: [`config_string`]).
pub fn register_sim(registry: &mut crate::device::DeviceRegistry) -> Result<(), String> {
    registry.register(crate::device::DeviceEntry::new(
        "npu-sim",
        "timing model of the Ryzen AI NPU (phoenix, strix); its times are projections",
        || {
            crate::device::DeviceStatus::available(vec![
                "timing model of the Ryzen AI NPU (phoenix, strix); its times are projections"
                    .into(),
            ])
        },
        |config| {
            let (p, o) = parse_config(config)?;
            Ok(std::sync::Arc::new(NpuSim::with_options(p, o))
                as std::sync::Arc<dyn crate::device::Device>)
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_strings_round_trip_and_reject_nonsense() {
        let o = NpuOptions {
            columns: 2,
            runlists: false,
            ..NpuOptions::default()
        };
        let s = config_string(&NpuParams::strix(), &o);
        assert_eq!(s, "strix,columns=2,runlists=0");
        let (p, back) = parse_config(&s).unwrap();
        assert_eq!((p.name, back), ("strix", o));
        assert_eq!(parse_config("").unwrap().1, NpuOptions::default());
        assert!(parse_config("phoenix,columns=9")
            .unwrap_err()
            .contains("between 1 and 4"));
        assert!(parse_config("tpu")
            .unwrap_err()
            .contains("unknown NPU parameter set"));
        assert!(parse_config("phoenix,fast=1")
            .unwrap_err()
            .contains("unknown NPU option"));
    }
}
