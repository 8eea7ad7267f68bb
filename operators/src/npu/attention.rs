//! `attention` on the NPU: `attention_flash`, per-head online softmax over key blocks.

use super::{ceil_div, cycles, expect_count, f32s, kernel_err, product, single, static_f32};
use amanuensis_kernels::npu::{
    self, AttentionFlashContract, BF16_BYTES, F32_BYTES, TILE_DATA_MEMORY_BYTES,
};
use amanuensis_runtime::npu::{KernelWork, NpuCaps, NpuKernel, TileWork};
use amanuensis_runtime::op::ValueType;
use amanuensis_runtime::{OpError, Tensor};

/// f32 vector operations per score besides the two MACs: the scale multiply, the running
/// max, the subtraction of the max and the row-sum accumulation.
const F32_OPS_PER_SCORE: f64 = 4.0;

/// `attention` (plain or causal, without `return_weights`) → `attention_flash`.
/// q `[.., tq, d]`; k, v `[.., tk, d]` with q's leading dims or `[tk, d]` shared.
#[derive(Debug, Clone, Copy)]
pub struct AttentionFlashKernel {
    /// Heads (>= 1); the head dim is `d / heads`.
    pub heads: usize,
    /// Query i attends keys `j <= tk - tq + i`.
    pub causal: bool,
    /// The op's second output (probabilities); the flash kernel never forms them.
    pub return_weights: bool,
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy, Default)]
struct Dims {
    batch: usize,
    tq: usize,
    tk: usize,
    hd: usize,
}

impl AttentionFlashKernel {
    fn dims(&self, inputs: &[ValueType]) -> Result<Dims, String> {
        if self.return_weights {
            return Err(
                "return_weights: attention_flash never materialises the probabilities".into(),
            );
        }
        expect_count(inputs, &["q", "k", "v"])?;
        let q = static_f32(&inputs[0], "q")?;
        let k = static_f32(&inputs[1], "k")?;
        let v = static_f32(&inputs[2], "v")?;
        if q.len() < 2 {
            return Err(format!("q {} must have rank >= 2", inputs[0]));
        }
        if k != v {
            return Err(format!("k {} and v {} differ", inputs[1], inputs[2]));
        }
        let shared = k.len() == 2;
        if !shared && k.len() != q.len() {
            return Err(format!(
                "k {} must be rank 2 (shared) or have q's rank",
                inputs[1]
            ));
        }
        let d = q[q.len() - 1];
        if k[k.len() - 1] != d {
            return Err(format!(
                "q's model dim {d} differs from k's {}",
                k[k.len() - 1]
            ));
        }
        if !shared && q[..q.len() - 2] != k[..k.len() - 2] {
            return Err(format!(
                "q {} and k {} disagree on leading dims",
                inputs[0], inputs[1]
            ));
        }
        if self.heads == 0 || d == 0 || d % self.heads != 0 {
            return Err(format!(
                "model dim {d} does not split into {} heads",
                self.heads
            ));
        }
        let hd = d / self.heads;
        let fp = AttentionFlashContract::footprint(hd).total();
        if fp > TILE_DATA_MEMORY_BYTES {
            return Err(format!(
                "head dim {hd} needs {fp} B of tile memory, more than {TILE_DATA_MEMORY_BYTES}"
            ));
        }
        let (tq, tk) = (q[q.len() - 2], k[k.len() - 2]);
        if self.causal && tk < tq {
            return Err(format!("causal attention needs tk >= tq, got {tk} < {tq}"));
        }
        Ok(Dims {
            batch: q[..q.len() - 2].iter().product(),
            tq,
            tk,
            hd,
        })
    }
}

impl NpuKernel for AttentionFlashKernel {
    fn name(&self) -> &str {
        "attention_flash"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        self.dims(inputs).map(|_| ())
    }

    /// - Column step: one head × `BLOCK_Q·rows` query rows (each compute tile takes
    ///   `BLOCK_Q` = 16 rows); `steps = batch · heads · ceil(tq / (BLOCK_Q·rows))`.
    /// - Keys per query row: `tk`, or for causal attention the mean `tk − tq + (tq+1)/2`
    ///   over the rows (the kernel skips key blocks past the limit).
    /// - `cycles = ceil(2·BLOCK_Q·keys·hd / bf16_macs_per_cycle)` (Q·Kᵀ and P·V MACs)
    ///   `+ ceil(BLOCK_Q·keys / transcendentals_per_cycle)` (one exp per score)
    ///   `+ ceil(4·BLOCK_Q·keys / f32_ops_per_cycle)` (scale, max, subtract, sum per score).
    /// - `in_bytes` = the Q block `(BLOCK_Q·rows)·hd·2` plus the head's K and V
    ///   `tk·hd·2·2` (bf16). When K and V fit in the memory tile beside the ping/pong Q
    ///   (bf16) and O (f32) blocks, `2·(BLOCK_Q·rows)·hd·(2+4)`, they are resident
    ///   (`resident_bytes` = them) while the column walks the head's
    ///   `ceil(tq/(BLOCK_Q·rows))` query steps, so each step carries
    ///   `ceil(tk·hd·4 / query steps)`; otherwise they are streamed every step.
    /// - `out_bytes = (BLOCK_Q·rows)·hd·4`; footprints `AttentionFlashContract::footprint(hd)`;
    ///   `shim_bds = 4` (q, k, v, out); `macs = batch·heads·tq·keys·hd·2`.
    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork {
        let d = self.dims(inputs).unwrap_or_else(|_| {
            // Unchecked types: best-effort dims, never a panic.
            let q = inputs.first().map(super::dims).unwrap_or_default();
            let k = inputs.get(1).map(super::dims).unwrap_or_default();
            let at = |v: &[usize], back: usize| v.len().checked_sub(back).map_or(0, |i| v[i]);
            Dims {
                batch: product(&q[..q.len().saturating_sub(2)]) as usize,
                tq: at(&q, 2),
                tk: at(&k, 2),
                hd: at(&q, 1) / self.heads.max(1),
            }
        });
        let bq = AttentionFlashContract::BLOCK_Q as u64;
        let rows = caps.rows.max(1) as u64;
        let (batch, tq, tk, hd) = (d.batch as u64, d.tq as u64, d.tk as u64, d.hd as u64);
        let heads = self.heads as u64;
        let q_rows = bq * rows;
        let (bf16, f32b) = (BF16_BYTES as u64, F32_BYTES as u64);
        let q_steps = ceil_div(tq, q_rows);
        // Mean keys per query row; causal rows i attend tk − tq + i + 1 keys.
        let keys = if self.causal {
            tk - tq.min(tk) + tq.div_ceil(2)
        } else {
            tk
        };
        let scores = (bq * keys) as f64;
        let cyc = cycles(2.0 * scores * hd as f64, caps.bf16_macs_per_cycle)
            + cycles(scores, caps.transcendentals_per_cycle)
            + cycles(F32_OPS_PER_SCORE * scores, caps.f32_ops_per_cycle);
        let kv = tk * hd * bf16 * 2;
        // K and V stay in the memory tile if they fit next to the ping/pong Q and O blocks.
        let blocks = 2 * q_rows * hd * (bf16 + f32b);
        let (kv_per_step, resident) = if kv + blocks <= caps.memtile_bytes as u64 {
            (ceil_div(kv, q_steps), kv)
        } else {
            (kv, 0)
        };
        let fp = AttentionFlashContract::footprint(d.hd);
        KernelWork {
            steps: batch * heads * q_steps,
            step: TileWork {
                in_bytes: q_rows * hd * bf16 + kv_per_step,
                out_bytes: q_rows * hd * f32b,
                cycles: cyc,
            },
            resident_bytes: resident,
            footprint_double: fp.total(),
            footprint_single: single(fp).total(),
            shim_bds: 4,
            macs: batch * heads * tq * keys * hd * 2,
        }
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let err = |m: String| OpError(format!("attention_flash: {m}"));
        if self.return_weights {
            return Err(err("return_weights is not supported".into()));
        }
        expect_count(inputs, &["q", "k", "v"]).map_err(err)?;
        let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
        let (qs, ks) = (q.shape(), k.shape());
        if qs.len() < 2 || ks.len() < 2 || k.shape() != v.shape() {
            return Err(err(format!(
                "q {qs:?}, k {ks:?}, v {:?} are not [.., t, d] with k = v",
                v.shape()
            )));
        }
        let (tq, d) = (qs[qs.len() - 2], qs[qs.len() - 1]);
        let tk = ks[ks.len() - 2];
        if ks[ks.len() - 1] != d || self.heads == 0 || d % self.heads != 0 {
            return Err(err(format!(
                "q {qs:?} and k {ks:?} do not split into {} heads of one width",
                self.heads
            )));
        }
        let shared = ks.len() == 2;
        if !shared && qs[..qs.len() - 2] != ks[..ks.len() - 2] {
            return Err(err(format!(
                "q {qs:?} and k {ks:?} disagree on leading dims"
            )));
        }
        if self.causal && tk < tq {
            return Err(err(format!(
                "causal attention needs tk >= tq, got {tk} < {tq}"
            )));
        }
        let batch: usize = qs[..qs.len() - 2].iter().product();
        let (qv, kv, vv) = (f32s(q, "q")?, f32s(k, "k")?, f32s(v, "v")?);
        let (qn, kn) = (tq * d, tk * d);
        let mut out = vec![0f32; qv.len()];
        for b in 0..batch {
            let ko = if shared { 0 } else { b * kn };
            npu::attention_flash(
                &amanuensis_kernels::cpu::AttentionShape::new(tq, tk, self.heads, d / self.heads)
                    .causal(self.causal.then_some(tk - tq)),
                part(&qv, b * qn, qn, "q")?,
                part(&kv, ko, kn, "k")?,
                part(&vv, ko, kn, "v")?,
                &mut out[b * qn..(b + 1) * qn],
            )
            .map_err(kernel_err)?;
        }
        Ok(vec![Tensor::from_f32(qs, out)?])
    }
}

/// Elements `o..o + n` of an input, or an error naming it.
fn part<'a>(x: &'a [f32], o: usize, n: usize, what: &str) -> Result<&'a [f32], OpError> {
    o.checked_add(n)
        .and_then(|end| x.get(o..end))
        .ok_or_else(|| {
            OpError(format!(
                "attention_flash: {what} has {} elements, needs {o}+{n}",
                x.len()
            ))
        })
}
