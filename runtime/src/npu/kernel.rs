//! The NPU layer of an operator: a kernel of the NPU catalogue bound to an op, with the
//! cost description the timing model and the scheduler's tiling pass use.

use crate::error::OpError;
use crate::op::ValueType;
use crate::tensor::Tensor;
use std::fmt;

/// What an NPU offers a kernel's cost model (from the device's parameter set).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NpuCaps {
    /// Compute tiles per column (rows of the array).
    pub rows: usize,
    /// bf16 multiply-accumulates per cycle per compute tile, at the kernels' achieved efficiency.
    pub bf16_macs_per_cycle: f64,
    /// f32 vector operations per cycle per compute tile (elementwise work, reductions).
    pub f32_ops_per_cycle: f64,
    /// Transcendental evaluations (exp, erf) per cycle per compute tile.
    pub transcendentals_per_cycle: f64,
    /// Data memory of one compute tile, bytes.
    pub tile_data_memory: usize,
    /// Memory tile bytes per column.
    pub memtile_bytes: usize,
}

/// Cost of one column step: the column's compute tiles each process one tile of the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TileWork {
    /// Bytes the column's shim DMA brings in from device memory for this step.
    pub in_bytes: u64,
    /// Bytes it writes back.
    pub out_bytes: u64,
    /// Compute cycles of the step (the compute tiles run in parallel).
    pub cycles: u64,
}

/// How one node's work splits into column steps.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelWork {
    /// Column steps in all (spread over the columns by the tiling pass).
    pub steps: u64,
    /// Cost of each step (edge steps are padded to the full tile, as the hardware does).
    pub step: TileWork,
    /// Bytes loaded once per dispatch per column and kept in the memory tile (weights
    /// blocks, norms' gamma/beta).
    pub resident_bytes: u64,
    /// Compute-tile data memory one tile needs with ping/pong buffers.
    pub footprint_double: usize,
    /// The same with single buffers (no DMA/compute overlap).
    pub footprint_single: usize,
    /// Buffer descriptors one column's shim DMA needs for the dispatch's transfer pattern.
    pub shim_bds: usize,
    /// Multiply-accumulates in all (for utilisation figures).
    pub macs: u64,
}

/// A kernel of the NPU catalogue, offered by an operator through an [`super::NpuBinding`]. The simulator evaluates [`eval`](NpuKernel::eval), which must be the
/// kernel's bit-exact reference; a real device runs the compiled kernel with the same
/// contract.
pub trait NpuKernel: Send + Sync + fmt::Debug {
    /// Catalogue name, e.g. `matmul_bias` (the kernel manifest maps it to binaries).
    fn name(&self) -> &str;

    /// Whether the kernel handles inputs of these (static) types; the reason when not.
    fn check(&self, inputs: &[ValueType]) -> Result<(), String>;

    /// The work of one evaluation on inputs of these types.
    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork;

    /// Evaluates with the bit-exact reference.
    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError>;
}
