//! Runs of the dry double computed by the catalogue kernels' bit-exact references, so a
//! dry run's outputs are real.

use crate::args::{read_tensor, write_tensor, FIRST_DATA_ARG};
use crate::double::RunInvocation;
use crate::manifest::{ArgBinding, KernelEntry};
use amanuensis_runtime::npu::kernel_of;
use amanuensis_runtime::schedule::Plan;
use amanuensis_runtime::tensor::DType;

/// Computes node `node` of `plan` for one execution of its run: reads the inputs from
/// the argument buffers in the entry's element types, evaluates the kernel's reference,
/// writes the outputs back.
pub fn compute(
    plan: &Plan,
    node: usize,
    entry: &KernelEntry,
    inv: &mut RunInvocation<'_>,
) -> Result<(), String> {
    let n = &plan.graph.nodes[node];
    let k =
        kernel_of(n.op.as_ref())?.ok_or_else(|| format!("node '{}' has no NPU kernel", n.name))?;
    let arg_of = |b: ArgBinding| {
        entry
            .args
            .iter()
            .position(|a| a.binding == b)
            .map(|i| (FIRST_DATA_ARG + i as u32, entry.args[i].dtype))
            .ok_or_else(|| format!("kernel {}: no argument for {b:?}", entry.label()))
    };
    let mut inputs = Vec::with_capacity(entry.variant.0.len());
    for (i, shape) in entry.variant.0.iter().enumerate() {
        let (argno, dtype) = arg_of(ArgBinding::Input(i))?;
        // A buffer may be larger than the value: values of one arena slot share it.
        let bytes = shape.iter().product::<usize>() * dtype.size();
        let src = inv.arg(argno)?;
        let src = src
            .get(..bytes)
            .ok_or_else(|| format!("a {}-byte buffer does not hold shape {shape:?}", src.len()))?;
        inputs.push(read_tensor(src, dtype, DType::F32, shape)?);
    }
    let refs: Vec<_> = inputs.iter().collect();
    let outs = k.eval(&refs).map_err(|e| e.to_string())?;
    for (o, t) in outs.iter().enumerate() {
        let (argno, dtype) = arg_of(ArgBinding::Output(o))?;
        let bytes = t.numel() * dtype.size();
        let dst = inv.arg_mut(argno)?;
        let len = dst.len();
        let dst = dst
            .get_mut(..bytes)
            .ok_or_else(|| format!("output {o}: {bytes} bytes exceed its {len}-byte buffer"))?;
        write_tensor(t, dtype, dst)?;
    }
    Ok(())
}
