//! Parameter sets of the NPU timing model. Every figure comes from a public source listed in
//! `docs/npu.md` ("Sources of the timing model's figures": AMD AM020/AM027, the amdxdna
//! driver, mlir-aie and XRT measurements); where the model has to
//! choose (efficiency, transcendental rate) the choice is stated.

use super::NpuCaps;

/// Device-memory bandwidth the array's shims see together on Phoenix, fitted on
/// whisper-xdna's large-v3/turbo encoder (`docs/whisper-xdna.md`): its GEMMs stream A and
/// B through device memory and are bound by this, not by the tiles' MAC rate.
pub const PHOENIX_DDR_BYTES_PER_S: f64 = 26.0e9;
/// amd/xdna-driver issue 1399: creating a buffer object on an HX370 takes ≈ 99 ms per GB
/// (4-KiB pages, pinned and mapped page by page).
pub const BO_ALLOC_BYTES_PER_S: f64 = 1.0e9 / 0.099;
/// Host fp32 element pass, derived so that whisper-xdna's large-v3 host work projects to
/// its measured 0.84 CPU-seconds per pass (with [`HOST_CALL_S`] and the syncs).
pub const HOST_ELEMENT_S: f64 = 0.1606e-9;
/// Host bookkeeping per submission of a described schedule (whisper-xdna's Python host
/// around each launch), fitted on the turbo context ladder.
pub const HOST_CALL_S: f64 = 0.85e-3;

/// One NPU generation's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct NpuParams {
    /// Short name (`phoenix`, `strix`).
    pub name: &'static str,
    /// Columns an application partition sees.
    pub columns: usize,
    /// Compute tiles per column.
    pub rows: usize,
    /// Compute-tile data memory, bytes.
    pub tile_data_memory: usize,
    /// Memory tile per column, bytes.
    pub memtile_bytes: usize,
    /// Shim DMA channels into the array per column (MM2S).
    pub shim_in_channels: usize,
    /// Shim DMA channels out of the array per column (S2MM).
    pub shim_out_channels: usize,
    /// Bytes per cycle per DMA channel (stream width).
    pub channel_bytes_per_cycle: f64,
    /// Buffer descriptors per shim DMA channel.
    pub shim_bds: usize,
    /// Array clock, Hz.
    pub clock_hz: f64,
    /// Peak bf16 MACs per cycle per compute tile.
    pub bf16_macs_per_cycle: f64,
    /// Fraction of the MAC peak a tuned kernel's inner loop sustains (DMA stalls are
    /// modelled separately, so this is the loop's own efficiency).
    pub mac_efficiency: f64,
    /// f32 vector operations per cycle per compute tile.
    pub f32_ops_per_cycle: f64,
    /// exp/erf evaluations per cycle per compute tile.
    pub transcendentals_per_cycle: f64,
    /// Ceiling of device-memory bandwidth seen by all shims together, bytes/s.
    pub ddr_bytes_per_s: f64,
    /// Host cost of one isolated run (xrt::run start → wait returns, no other work), s.
    pub dispatch_s: f64,
    /// Host cost of each run inside a runlist (chained commands), s.
    pub runlist_run_s: f64,
    /// Switching the array to another hardware context (another xclbin), s.
    pub context_switch_s: f64,
    /// Creating a hardware context (loading its xclbin's configuration), s.
    pub context_create_s: f64,
    /// Hardware contexts one process may hold at once.
    pub max_hw_contexts: usize,
    /// Fixed cost of one buffer-object sync (cache maintenance call), seconds.
    pub bo_sync_s: f64,
    /// Host copy/flush bandwidth of a buffer-object sync, bytes/s.
    pub bo_sync_bytes_per_s: f64,
    /// Runs a hardware context keeps in flight (the host may submit ahead this far).
    pub in_flight: usize,
    /// Allocating (and pinning) a buffer object, bytes/s: paid again for a design's
    /// buffers whenever its hardware context is re-created.
    pub bo_alloc_bytes_per_s: f64,
    /// Host CPU time of one fp32 element pass (read + write) of the host work a described
    /// schedule does between runs (norms, conversions, copies), seconds.
    pub host_element_s: f64,
    /// Host CPU time around each submission of a described schedule beyond its element
    /// passes and syncs (the host program's per-launch bookkeeping), seconds.
    pub host_call_s: f64,
}

impl NpuParams {
    /// Phoenix (XDNA1, AIE-ML, "npu1"): 4 usable columns × 4 compute tiles.
    pub fn phoenix() -> Self {
        NpuParams {
            name: "phoenix",
            columns: 4,
            rows: 4,
            tile_data_memory: 64 * 1024,
            memtile_bytes: 512 * 1024,
            shim_in_channels: 2,
            shim_out_channels: 2,
            channel_bytes_per_cycle: 4.0,
            shim_bds: 16,
            // The highest H-clock DPM level of npu1 (the driver's performance mode); the
            // lower levels (800, 1024, 1309 MHz) scale every compute figure by the ratio.
            clock_hz: 1.6e9,
            bf16_macs_per_cycle: 128.0,
            mac_efficiency: 0.75,
            f32_ops_per_cycle: 16.0,
            // exp/erf are polynomial/LUT sequences on AIE-ML: a few cycles per lane group.
            transcendentals_per_cycle: 4.0,
            ddr_bytes_per_s: PHOENIX_DDR_BYTES_PER_S,
            // docs/npu.md, sources: an isolated run ≈ 45–60 µs on Linux, ≈ 9–11 µs inside a runlist,
            // a context switch ≈ 1.4 ms on XDNA1, creation ≈ 2.5 ms, 6 contexts per process.
            dispatch_s: 50e-6,
            runlist_run_s: 10e-6,
            context_switch_s: 1.4e-3,
            context_create_s: 2.5e-3,
            max_hw_contexts: 6,
            bo_sync_s: 8e-6,
            bo_sync_bytes_per_s: 16.0e9,
            in_flight: 4,
            bo_alloc_bytes_per_s: BO_ALLOC_BYTES_PER_S,
            host_element_s: HOST_ELEMENT_S,
            host_call_s: HOST_CALL_S,
        }
    }

    /// Strix (XDNA2, AIE2P): 8 columns, 64-bit streams; the bf16 MAC rate is unconfirmed in
    /// the public sources and taken as twice AIE-ML's.
    pub fn strix() -> Self {
        NpuParams {
            name: "strix",
            columns: 8,
            channel_bytes_per_cycle: 8.0,
            clock_hz: 1.8e9,
            bf16_macs_per_cycle: 256.0,
            ddr_bytes_per_s: 60.0e9,
            dispatch_s: 50e-6,
            // docs/npu.md, sources: 8.8 µs per run in a runlist on Strix; ≈ 2.7 ms per context
            // switch on XDNA2; 16 contexts per process.
            runlist_run_s: 8.8e-6,
            context_switch_s: 2.7e-3,
            max_hw_contexts: 16,
            ..Self::phoenix()
        }
    }

    /// The set of that name.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "phoenix" => Some(Self::phoenix()),
            "strix" => Some(Self::strix()),
            _ => None,
        }
    }

    /// What kernels' cost models see.
    pub fn caps(&self) -> NpuCaps {
        NpuCaps {
            rows: self.rows,
            bf16_macs_per_cycle: self.bf16_macs_per_cycle * self.mac_efficiency,
            f32_ops_per_cycle: self.f32_ops_per_cycle,
            transcendentals_per_cycle: self.transcendentals_per_cycle,
            tile_data_memory: self.tile_data_memory,
            memtile_bytes: self.memtile_bytes,
        }
    }

    /// Seconds per array cycle.
    pub fn cycle_s(&self) -> f64 {
        1.0 / self.clock_hz
    }

    /// Peak bf16 MAC/s of `columns` columns.
    pub fn peak_macs_per_s(&self, columns: usize) -> f64 {
        columns as f64 * self.rows as f64 * self.bf16_macs_per_cycle * self.clock_hz
    }
}
