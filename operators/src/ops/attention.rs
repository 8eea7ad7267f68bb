//! Multi-head scaled dot-product attention, plain and with an in-place KV cache.

use super::{f32_input, scalar_index};
use crate::npu;
use amanuensis_kernels::cpu;
use amanuensis_kernels::cpu::tuning::ATTENTION_GEMM_MIN_TQ;
use amanuensis_runtime::format::Dim;
use amanuensis_runtime::npu::NpuBinding;
use amanuensis_runtime::op::{
    expect_inputs, expect_same_dim, Attrs, EvalContext, OpDef, Operator, ValueType,
};
use amanuensis_runtime::{DType, OpError, Tensor};
use std::borrow::Cow;

fn heads_attr(attrs: &Attrs) -> Result<usize, OpError> {
    let heads = attrs.usize("heads")?;
    if heads == 0 {
        return Err(OpError("attribute 'heads' must be >= 1".into()));
    }
    Ok(heads)
}

fn head_dim(d: usize, heads: usize) -> Result<usize, OpError> {
    if !d.is_multiple_of(heads) {
        return Err(OpError(format!(
            "model dim {d} is not divisible by {heads} heads"
        )));
    }
    Ok(d / heads)
}

fn check_heads(d: &Dim, heads: usize) -> Result<(), OpError> {
    if let Dim::Known(d) = d {
        head_dim(*d, heads)?;
    }
    Ok(())
}

/// `softmax(q·kᵀ/√d_head)·v` per head. q is `[.., tq, d]`; k and v are `[.., tk, d]` with
/// the same leading dims as q, or `[tk, d]` shared by every leading index (e.g. the
/// encoder output attended by every beam). The first leading dim of k may also divide
/// q's: then consecutive groups of q's rows share one k row (the windows of a batched
/// decode, each attended by its own beams).
/// With `return_weights`, a second output holds the attention probabilities
/// `[.., heads, tq, tk]` (used for word-level alignment; the fast path never materialises
/// them). With `bf16_products` (default false), calls of several query rows multiply in
/// bf16 with f32 sums (the int8 compute type sets it on the encoder; see
/// `docs/kernels.md`). With `bf16x3` (default false) they multiply as bf16x3 products
/// instead ([`cpu::attention_bf16x3`]: each operand split into two bf16 values, results
/// about 2⁻¹⁵ relative from exact), on AMX tiles where the CPU has them; it takes
/// precedence over `bf16_products`. With `kv_heads_major` (default false), k and v store each head's
/// keys contiguously, `[.., heads, tk, d/heads]` (as `split_heads` writes them; the
/// decoder's cross-attention at the int8 and bf16 compute types): the same attention,
/// read faster from memory; no NPU kernel takes that layout.
pub struct AttentionDef;
#[derive(Debug)]
struct Attention {
    heads: usize,
    causal: bool,
    return_weights: bool,
    /// Products of many query rows in bf16 ([`cpu::attention_bf16`]); single rows and
    /// the weights output stay f32.
    bf16_products: bool,
    /// Products of many query rows as bf16x3 ([`cpu::attention_bf16x3`]).
    bf16x3: bool,
    /// K and V are `[.., heads, tk, head_dim]`.
    kv_heads_major: bool,
    npu: NpuBinding,
}

impl OpDef for AttentionDef {
    fn name(&self) -> &str {
        "attention"
    }
    fn summary(&self) -> &str {
        "multi-head softmax(q·kᵀ/√d_head)·v; k, v may be shared across q's leading dims"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&[
            "heads",
            "causal",
            "return_weights",
            "bf16_products",
            "bf16x3",
            "kv_heads_major",
        ])?;
        let (heads, causal) = (heads_attr(attrs)?, attrs.bool_or("causal", false)?);
        let return_weights = attrs.bool_or("return_weights", false)?;
        Ok(Box::new(Attention {
            heads,
            causal,
            return_weights,
            bf16_products: attrs.bool_or("bf16_products", false)?,
            bf16x3: attrs.bool_or("bf16x3", false)?,
            kv_heads_major: attrs.bool_or("kv_heads_major", false)?,
            npu: NpuBinding::owned(npu::AttentionFlashKernel {
                heads,
                causal,
                return_weights,
            }),
        }))
    }
}

impl Operator for Attention {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["q", "k", "v"])?;
        let q = &inputs[0];
        // Heads stored one after another: checked here, then treated as the `[.., tk, d]`
        // they hold.
        let (k, v) = if self.kv_heads_major {
            let d = q.last("q")?;
            (
                self.rows_of_heads(&inputs[1], d, "k")?,
                self.rows_of_heads(&inputs[2], d, "v")?,
            )
        } else {
            (inputs[1].clone(), inputs[2].clone())
        };
        let (k, v) = (&k, &v);
        q.expect_dtype(DType::F32, "q")?;
        // K and V may be stored in f16 (the decoder's cross-attention at the int8 and
        // bf16 compute types); both in the same type.
        if k.dtype != DType::F16 {
            k.expect_dtype(DType::F32, "k")?;
        }
        v.expect_dtype(k.dtype, "v")?;
        for (t, n) in inputs.iter().zip(["q", "k", "v"]) {
            if t.rank() < 2 {
                return Err(OpError(format!("{n}: expected rank >= 2, got {t}")));
            }
        }
        if k.shape != v.shape && !k.compatible(v) {
            return Err(OpError(format!("k {k} and v {v} differ")));
        }
        if k.rank() != 2 && k.rank() != q.rank() {
            return Err(OpError(format!(
                "k must be rank 2 (shared) or have q's rank; q {q}, k {k}"
            )));
        }
        let d = q.last("q")?;
        expect_same_dim(d, k.last("k")?, "q's model dim vs k's")?;
        check_heads(d, self.heads)?;
        if k.rank() == q.rank() {
            // With one leading dim it may differ (grouped rows; checked at run time when
            // symbolic).
            let first = if q.rank() == 3 { 1 } else { 0 };
            if let (1, Dim::Known(qb), Dim::Known(kb)) = (first, &q.shape[0], &k.shape[0]) {
                if *kb == 0 || qb % kb != 0 {
                    return Err(OpError(format!(
                        "q's batch {qb} is not a multiple of k's batch {kb}"
                    )));
                }
            }
            for i in first..q.rank() - 2 {
                expect_same_dim(&q.shape[i], &k.shape[i], &format!("q's dim {i} vs k's"))?;
            }
        }
        if !self.return_weights {
            return Ok(vec![q.clone()]);
        }
        let mut w = q.shape[..q.rank() - 2].to_vec();
        w.push(Dim::Known(self.heads));
        w.push(q.shape[q.rank() - 2].clone());
        w.push(k.shape[k.rank() - 2].clone());
        Ok(vec![q.clone(), ValueType::new(DType::F32, w)])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
        if k.shape() != v.shape() {
            return Err(OpError(format!(
                "k {:?} and v {:?} differ",
                k.shape(),
                v.shape()
            )));
        }
        if q.shape().len() < 2 || k.shape().len() < 2 {
            return Err(OpError(format!(
                "q {:?} and k {:?}: expected rank >= 2",
                q.shape(),
                k.shape()
            )));
        }
        let qs = q.shape();
        let ks = if self.kv_heads_major {
            self.rows_of_heads_shape(k.shape(), qs[qs.len() - 1])?
        } else {
            k.shape().to_vec()
        };
        let d = qs[qs.len() - 1];
        let tq = qs[qs.len() - 2];
        let tk = ks[ks.len() - 2];
        if ks[ks.len() - 1] != d {
            return Err(OpError(format!(
                "q's model dim {d} != k's {}",
                ks[ks.len() - 1]
            )));
        }
        let hd = head_dim(d, self.heads)?;
        let batch = q.numel() / (tq * d).max(1);
        // q rows per k row: all of them when k is shared, else batch / k's batch.
        let k_batch = if ks.len() == 2 {
            1
        } else {
            k.numel() / (tk * d).max(1)
        };
        // Grouping is defined for one leading dim; deeper ranks need equal leading dims.
        let grouped_ok = if qs.len() == 3 {
            k_batch > 0 && batch.is_multiple_of(k_batch)
        } else {
            k_batch == batch
        };
        if ks.len() != 2 && (ks.len() != qs.len() || !grouped_ok) {
            return Err(OpError(format!(
                "q {qs:?} and k {ks:?} disagree on leading dims"
            )));
        }
        let group = (batch / k_batch.max(1)).max(1);
        if self.causal && tk < tq {
            return Err(OpError(format!(
                "causal attention needs tk >= tq, got {tk} < {tq}"
            )));
        }
        if k.dtype() != v.dtype() {
            return Err(OpError(format!(
                "k is {} and v {}: they must have one type",
                k.dtype(),
                v.dtype()
            )));
        }
        // f16 keys and values, a few query rows, no mask and no weights output: the
        // decoder's cross-attention steps, read in their stored type. Anything else
        // widens them (a window's prompt, alignment).
        if k.dtype() == DType::F16
            && !self.causal
            && !self.return_weights
            && tq < ATTENTION_GEMM_MIN_TQ
        {
            let (qv, k16, v16) = (f32_input(q, "q")?, k.f16s()?, v.f16s()?);
            let mut out = ctx.alloc_f32(qs);
            let o = out.f32s_mut()?;
            let strides = if self.kv_heads_major {
                cpu::KvStrides::heads_major(tk, hd)
            } else {
                cpu::KvStrides::rows(d, hd)
            };
            // One call per group of q's rows sharing a k (a window's beams).
            let rows = group * tq;
            for c in 0..batch / group {
                let kvo = c * tk * d;
                cpu::attention_direct_f16kv(
                    &cpu::AttentionShape::new(rows, tk, self.heads, hd),
                    strides,
                    &qv[c * rows * d..(c + 1) * rows * d],
                    &k16[kvo..kvo + tk * d],
                    &v16[kvo..kvo + tk * d],
                    &mut o[c * rows * d..(c + 1) * rows * d],
                );
            }
            return Ok(vec![out]);
        }
        let qv = f32_input(q, "q")?;
        let strides = if self.kv_heads_major {
            cpu::KvStrides::heads_major(tk, hd)
        } else {
            cpu::KvStrides::rows(d, hd)
        };
        // A window's prompt (many rows) takes rows of interleaved heads, widened and
        // interleaved in one pass into this thread's kept buffers.
        let interleave = self.kv_heads_major && !self.return_weights;
        let mut kv_rows = if interleave {
            KV_ROWS.take()
        } else {
            Default::default()
        };
        if interleave {
            interleave_heads_into(k, tk, self.heads, hd, &mut kv_rows.0)?;
            interleave_heads_into(v, tk, self.heads, hd, &mut kv_rows.1)?;
        }
        let (kv, vv) = if interleave {
            (Cow::Borrowed(&kv_rows.0[..]), Cow::Borrowed(&kv_rows.1[..]))
        } else {
            (f32_input(k, "k")?, f32_input(v, "v")?)
        };
        let mut out = ctx.alloc_f32(qs);
        if self.return_weights {
            let mut wshape = qs[..qs.len() - 2].to_vec();
            wshape.extend([self.heads, tq, tk]);
            let mut weights = ctx.alloc_f32(&wshape);
            let (o, w) = (out.f32s_mut()?, weights.f32s_mut()?);
            for b in 0..batch {
                let kvo = (b / group) * tk * d;
                attention_with_weights(
                    &qv[b * tq * d..(b + 1) * tq * d],
                    &kv[kvo..kvo + tk * d],
                    &vv[kvo..kvo + tk * d],
                    strides,
                    tq,
                    tk,
                    self.heads,
                    hd,
                    self.causal.then_some(tk - tq),
                    &mut o[b * tq * d..(b + 1) * tq * d],
                    &mut w[b * self.heads * tq * tk..(b + 1) * self.heads * tq * tk],
                );
            }
            return Ok(vec![out, weights]);
        }
        let o = out.f32s_mut()?;
        // Single query rows without a causal mask (a decoder step's beams over their
        // window's cross K/V) go through one direct-path call per group sharing k: one
        // parallel section instead of one per beam, each head's K and V read by
        // consecutive tasks. Each row is computed exactly as alone, so a row's result does
        // not depend on how many rows share its keys (lockstep decoding relies on it).
        let per_call = if tq == 1 && !self.causal { group } else { 1 };
        let path: cpu::AttentionKernel = if per_call > 1 {
            cpu::attention_direct
        } else if self.bf16x3 && tq >= ATTENTION_GEMM_MIN_TQ {
            cpu::attention_bf16x3_widest
        } else if self.bf16_products && tq >= ATTENTION_GEMM_MIN_TQ {
            cpu::attention_bf16_best
        } else {
            cpu::attention
        };
        let rows = per_call * tq;
        for c in 0..batch / per_call {
            let kvo = (c * per_call / group) * tk * d;
            path(
                &cpu::AttentionShape::new(rows, tk, self.heads, hd)
                    .causal(self.causal.then_some(tk - tq)),
                &qv[c * rows * d..(c + 1) * rows * d],
                &kv[kvo..kvo + tk * d],
                &vv[kvo..kvo + tk * d],
                &mut o[c * rows * d..(c + 1) * rows * d],
            );
        }
        drop((kv, vv));
        if interleave {
            KV_ROWS.set(kv_rows);
        }
        Ok(vec![out])
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        // The NPU kernel reads rows of interleaved heads.
        if self.kv_heads_major {
            return None;
        }
        self.npu.offer(target)
    }
}

impl Attention {
    /// The `[.., tk, d]` type a `[.., heads, tk, d/heads]` k or v (`what`) holds, for q's
    /// model dim `d`.
    fn rows_of_heads(&self, t: &ValueType, d: &Dim, what: &str) -> Result<ValueType, OpError> {
        let r = t.rank();
        if r < 3 {
            return Err(OpError(format!(
                "{what}: with kv_heads_major, expected [.., heads, tk, head_dim], got {t}"
            )));
        }
        expect_same_dim(
            &t.shape[r - 3],
            &Dim::Known(self.heads),
            &format!("{what}'s heads vs the 'heads' attribute"),
        )?;
        let width = match (d, &t.shape[r - 1]) {
            (Dim::Known(d), Dim::Known(hd)) => {
                if *hd * self.heads != *d {
                    return Err(OpError(format!(
                        "{what}'s head size {hd} times {} heads is not q's model dim {d}",
                        self.heads
                    )));
                }
                Dim::Known(*d)
            }
            (d, _) => d.clone(),
        };
        let mut shape = t.shape[..r - 3].to_vec();
        shape.push(t.shape[r - 2].clone());
        shape.push(width);
        Ok(ValueType::new(t.dtype, shape))
    }

    /// [`Attention::rows_of_heads`] on a run-time shape.
    fn rows_of_heads_shape(&self, ks: &[usize], d: usize) -> Result<Vec<usize>, OpError> {
        let r = ks.len();
        if r < 3 || ks[r - 3] != self.heads || ks[r - 1] * self.heads != d {
            return Err(OpError(format!(
                "k {ks:?}: with kv_heads_major, expected [.., {}, tk, {}]",
                self.heads,
                d / self.heads.max(1)
            )));
        }
        let mut rows = ks[..r - 3].to_vec();
        rows.extend([ks[r - 2], d]);
        Ok(rows)
    }
}

/// The first `tk` of `cap` positions of `[heads, cap, hd]` as rows of interleaved heads,
/// `[tk, heads·hd]`.
fn interleave_heads_prefix(x: &[f32], cap: usize, tk: usize, heads: usize, hd: usize) -> Vec<f32> {
    let mut y = vec![0.0; tk * heads * hd];
    for h in 0..heads {
        for j in 0..tk {
            y[j * heads * hd + h * hd..][..hd].copy_from_slice(&x[(h * cap + j) * hd..][..hd]);
        }
    }
    y
}

thread_local! {
    /// This thread's keys and values of a prompt as rows of interleaved heads, kept between
    /// calls: allocated afresh, they were 12 MB of new pages a layer for whisper-base, whose
    /// page faults took longer than the attention's arithmetic.
    static KV_ROWS: std::cell::Cell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// Rows of interleaved heads, `[.., tk, heads·hd]`, from an f32 or f16 tensor whose heads
/// are stored one after another, `[.., heads, tk, hd]`, into `y` (resized), widened as they
/// are copied (exactly: the values of widening first).
fn interleave_heads_into(
    x: &Tensor,
    tk: usize,
    heads: usize,
    hd: usize,
    y: &mut Vec<f32>,
) -> Result<(), OpError> {
    use half::slice::HalfFloatSliceExt;
    let n = x.numel();
    if y.len() != n {
        y.clear();
        y.resize(n, 0.0);
    }
    let m = tk * heads * hd;
    if m == 0 {
        return Ok(());
    }
    let mut place = |src_len: usize, copy: &mut dyn FnMut(usize, &mut [f32])| {
        for (b, dst) in y.chunks_exact_mut(m).enumerate() {
            for h in 0..heads {
                for j in 0..tk {
                    let from = b * m + h * tk * hd + j * hd;
                    debug_assert!(from + hd <= src_len);
                    copy(from, &mut dst[j * heads * hd + h * hd..][..hd]);
                }
            }
        }
    };
    if x.dtype() == DType::F16 {
        let src = x.f16s()?;
        place(src.len(), &mut |from, dst| {
            src[from..from + hd].convert_to_f32_slice(dst)
        });
    } else {
        let src = f32_input(x, "k/v")?;
        place(src.len(), &mut |from, dst| {
            dst.copy_from_slice(&src[from..from + hd])
        });
    }
    Ok(())
}

/// Causal self-attention over a KV cache kept in two state tensors `[batch, capacity, d]`:
/// writes the new k, v rows at `offset`, then attends q (positions `offset..offset+n`) over
/// cache rows `0..offset+n`. With `heads_major` (default false) the caches store each
/// head's positions contiguously, `[batch, heads, capacity, d/heads]`: the same results,
/// bit for bit, and a one-token step reads each head's filled positions as one run
/// (`docs/kernels.md`, "Keys and values stored by head").
pub struct KvCacheAttentionDef;
#[derive(Debug)]
struct KvCacheAttention {
    heads: usize,
    heads_major: bool,
}

impl OpDef for KvCacheAttentionDef {
    fn name(&self) -> &str {
        "kv_cache_attention"
    }
    fn summary(&self) -> &str {
        "append k, v to the cache states at offset, then causal attention of q over the cache"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&["heads", "heads_major"])?;
        Ok(Box::new(KvCacheAttention {
            heads: heads_attr(attrs)?,
            heads_major: attrs.bool_or("heads_major", false)?,
        }))
    }
}

impl Operator for KvCacheAttention {
    fn infer(&self, inputs: &[ValueType], states: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["q", "k", "v", "offset"])?;
        expect_inputs(states, &["k_cache", "v_cache"])?;
        let q = &inputs[0];
        for (t, n) in inputs[..3].iter().zip(["q", "k", "v"]) {
            t.expect_dtype(DType::F32, n)?;
            t.expect_rank(3, n)?;
            if !t.compatible(q) {
                return Err(OpError(format!("{n} {t} differs from q {q}")));
            }
        }
        inputs[3].expect_dtype(DType::I32, "offset")?;
        inputs[3].expect_rank(0, "offset")?;
        check_heads(&q.shape[2], self.heads)?;
        for (s, n) in states.iter().zip(["k_cache", "v_cache"]) {
            s.expect_dtype(DType::F32, n)?;
            s.expect_rank(if self.heads_major { 4 } else { 3 }, n)?;
            expect_same_dim(&s.shape[0], &q.shape[0], &format!("{n}'s batch vs q's"))?;
            if self.heads_major {
                expect_same_dim(
                    &s.shape[1],
                    &Dim::Known(self.heads),
                    &format!("{n}'s heads vs the 'heads' attribute"),
                )?;
                if let (Dim::Known(d), Dim::Known(hd)) = (&q.shape[2], &s.shape[3]) {
                    if hd * self.heads != *d {
                        return Err(OpError(format!(
                            "{n}'s head size {hd} times {} heads is not q's model dim {d}",
                            self.heads
                        )));
                    }
                }
            } else {
                expect_same_dim(&s.shape[2], &q.shape[2], &format!("{n}'s model dim vs q's"))?;
            }
        }
        Ok(vec![q.clone()])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
        let offset = scalar_index(inputs[3], "offset")?;
        let qs = q.shape().to_vec();
        if k.shape() != qs.as_slice() || v.shape() != qs.as_slice() {
            return Err(OpError(format!(
                "q {qs:?}, k {:?}, v {:?} must have one shape",
                k.shape(),
                v.shape()
            )));
        }
        let (batch, n, d) = (qs[0], qs[1], qs[2]);
        let hd = head_dim(d, self.heads)?;
        let mut out = ctx.alloc_f32(&qs);
        let states = ctx.states();
        let heads = self.heads;
        let (cap, expected) = if self.heads_major {
            let cap = states[0].shape().get(2).copied().unwrap_or(0);
            (cap, vec![batch, heads, cap, hd])
        } else {
            let cap = states[0].shape().get(1).copied().unwrap_or(0);
            (cap, vec![batch, cap, d])
        };
        if states[0].shape() != expected || states[1].shape() != expected {
            let want = if self.heads_major {
                format!("[{batch}, {heads}, capacity, {hd}]")
            } else {
                format!("[{batch}, capacity, {d}]")
            };
            return Err(OpError(format!(
                "cache states are {:?} and {:?}, expected {want} (were states reset for this batch size?)",
                states[0].shape(),
                states[1].shape()
            )));
        }
        if offset + n > cap {
            return Err(OpError(format!(
                "offset {offset} + {n} new tokens exceeds the cache capacity {cap}"
            )));
        }
        let (kv, vv, qv) = (f32_input(k, "k")?, f32_input(v, "v")?, f32_input(q, "q")?);
        let (kc, vc) = states.split_at_mut(1);
        let (kc, vc) = (kc[0].f32s_mut()?, vc[0].f32s_mut()?);
        let o = out.f32s_mut()?;
        let total = offset + n;
        if self.heads_major {
            let by_head = cpu::KvStrides::heads_major(cap, hd);
            for b in 0..batch {
                let base = b * cap * d;
                for i in 0..n {
                    let src = (b * n + i) * d;
                    for h in 0..heads {
                        let at = base + h * cap * hd + (offset + i) * hd;
                        kc[at..at + hd].copy_from_slice(&kv[src + h * hd..][..hd]);
                        vc[at..at + hd].copy_from_slice(&vv[src + h * hd..][..hd]);
                    }
                }
            }
            let (kc, vc) = (&*kc, &*vc);
            let attend = |b: usize, ob: &mut [f32]| {
                let base = b * cap * d;
                let qb = &qv[b * n * d..(b + 1) * n * d];
                let (kb, vb) = (&kc[base..base + cap * d], &vc[base..base + cap * d]);
                if n < ATTENTION_GEMM_MIN_TQ {
                    // What `cpu::attention` runs for so few rows, reading the heads in place.
                    cpu::attention_direct_kv(
                        &cpu::AttentionShape::new(n, total, heads, hd).causal(Some(offset)),
                        by_head,
                        qb,
                        kb,
                        vb,
                        ob,
                    );
                } else {
                    // A prompt: rows of interleaved heads for the blocked kernel.
                    let krows = interleave_heads_prefix(kb, cap, total, heads, hd);
                    let vrows = interleave_heads_prefix(vb, cap, total, heads, hd);
                    cpu::attention(
                        &cpu::AttentionShape::new(n, total, heads, hd).causal(Some(offset)),
                        qb,
                        &krows,
                        &vrows,
                        ob,
                    );
                }
            };
            if n < ATTENTION_GEMM_MIN_TQ && batch > 1 {
                // A step's beams: each too small to split by head, so the sequences go to
                // the cores (each computed exactly as alone).
                use rayon::prelude::*;
                o[..batch * n * d]
                    .par_chunks_mut((n * d).max(1))
                    .enumerate()
                    .for_each(|(b, ob)| attend(b, ob));
            } else {
                o[..batch * n * d]
                    .chunks_mut((n * d).max(1))
                    .enumerate()
                    .for_each(|(b, ob)| attend(b, ob));
            }
            return Ok(vec![out]);
        }
        for b in 0..batch {
            let base = b * cap * d;
            kc[base + offset * d..base + total * d]
                .copy_from_slice(&kv[b * n * d..(b + 1) * n * d]);
            vc[base + offset * d..base + total * d]
                .copy_from_slice(&vv[b * n * d..(b + 1) * n * d]);
            cpu::attention(
                &cpu::AttentionShape::new(n, total, self.heads, hd).causal(Some(offset)),
                &qv[b * n * d..(b + 1) * n * d],
                &kc[base..base + total * d],
                &vc[base..base + total * d],
                &mut o[b * n * d..(b + 1) * n * d],
            );
        }
        Ok(vec![out])
    }
}

/// Attention that also writes the probabilities `[heads, tq, tk]`: per head, scores by a
/// GEMM against a transposed copy of the head's keys, a row softmax, then a GEMM with v.
/// Used only where the weights are wanted (alignment), so clarity beats speed here.
#[allow(clippy::too_many_arguments)]
fn attention_with_weights(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv: cpu::KvStrides,
    tq: usize,
    tk: usize,
    heads: usize,
    hd: usize,
    causal_offset: Option<usize>,
    out: &mut [f32],
    weights: &mut [f32],
) {
    use rayon::prelude::*;
    let d = heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    if tq * tk == 0 {
        out[..tq * d].fill(0.0);
        return;
    }
    // Heads in parallel, each on its own copies; their outputs are interleaved after.
    let per_head: Vec<Vec<f32>> = weights[..heads * tq * tk]
        .par_chunks_mut(tq * tk)
        .enumerate()
        .map(|(h, p)| {
            let mut qh = vec![0f32; tq * hd];
            let mut kt = vec![0f32; hd * tk];
            let mut vh = vec![0f32; tk * hd];
            let mut oh = vec![0f32; tq * hd];
            for i in 0..tq {
                for c in 0..hd {
                    qh[i * hd + c] = q[i * d + h * hd + c] * scale;
                }
            }
            for j in 0..tk {
                let at = j * kv.row + h * kv.head;
                for c in 0..hd {
                    kt[c * tk + j] = k[at + c];
                }
                vh[j * hd..(j + 1) * hd].copy_from_slice(&v[at..at + hd]);
            }
            cpu::matmul(&qh, tq, hd, &kt, tk, p);
            for (i, row) in p.chunks_exact_mut(tk).enumerate() {
                if let Some(off) = causal_offset {
                    for s in &mut row[(off + i + 1).min(tk)..] {
                        *s = f32::NEG_INFINITY;
                    }
                }
                cpu::softmax_inplace(row);
            }
            cpu::matmul(p, tq, tk, &vh, hd, &mut oh);
            oh
        })
        .collect();
    for (h, oh) in per_head.iter().enumerate() {
        for i in 0..tq {
            out[i * d + h * hd..i * d + (h + 1) * hd].copy_from_slice(&oh[i * hd..(i + 1) * hd]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amanuensis_runtime::op::Attrs;

    fn attention(heads: usize) -> Box<dyn Operator> {
        let mut a = std::collections::BTreeMap::new();
        a.insert("heads".to_string(), serde_json::json!(heads));
        AttentionDef.build(&Attrs(a)).unwrap()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    fn known(shape: &[usize]) -> ValueType {
        ValueType::new(DType::F32, shape.iter().map(|&d| Dim::Known(d)).collect())
    }

    #[test]
    fn grouped_keys_equal_each_group_repeated_bit_for_bit() {
        let (windows, beams, tq, tk, d) = (3, 2, 2, 5, 8);
        let op = attention(2);
        let q = Tensor::from_f32(
            &[windows * beams, tq, d],
            values(windows * beams * tq * d, 1),
        )
        .unwrap();
        let k = Tensor::from_f32(&[windows, tk, d], values(windows * tk * d, 2)).unwrap();
        let v = Tensor::from_f32(&[windows, tk, d], values(windows * tk * d, 3)).unwrap();
        let mut none: [Tensor; 0] = [];
        let grouped = op
            .eval(&mut EvalContext::new(&mut none), &[&q, &k, &v])
            .unwrap();
        // The same rows with every window's k/v repeated once per beam.
        let repeat = |t: &Tensor| {
            let rows: Vec<f32> = t
                .f32s()
                .unwrap()
                .chunks_exact(tk * d)
                .flat_map(|w| std::iter::repeat_n(w, beams).flatten().copied())
                .collect();
            Tensor::from_f32(&[windows * beams, tk, d], rows).unwrap()
        };
        let (kr, vr) = (repeat(&k), repeat(&v));
        let per_row = op
            .eval(&mut EvalContext::new(&mut none), &[&q, &kr, &vr])
            .unwrap();
        assert_eq!(grouped[0].f32s().unwrap(), per_row[0].f32s().unwrap());
        // A k batch of one is the shared [tk, d] form.
        let k1 = Tensor::from_f32(&[1, tk, d], values(tk * d, 2)).unwrap();
        let v1 = Tensor::from_f32(&[1, tk, d], values(tk * d, 3)).unwrap();
        let k2 = k1.clone().reshape(&[tk, d]).unwrap();
        let v2 = v1.clone().reshape(&[tk, d]).unwrap();
        let a = op
            .eval(&mut EvalContext::new(&mut none), &[&q, &k1, &v1])
            .unwrap();
        let b = op
            .eval(&mut EvalContext::new(&mut none), &[&q, &k2, &v2])
            .unwrap();
        assert_eq!(a[0].f32s().unwrap(), b[0].f32s().unwrap());
    }

    #[test]
    fn single_query_rows_sharing_keys_equal_each_row_alone_bit_for_bit() {
        // A decoder step's beams over their windows' cross K/V: one row per beam, the rows
        // of a window computed in one call. Each must equal the row attended on its own,
        // whatever the number of rows beside it, or lockstep decoding would drift. 1500
        // keys and 8 heads of 64 take the kernels' parallel path.
        let (windows, beams, tk, d) = (2, 5, 1500, 512);
        let op = attention(8);
        let q = Tensor::from_f32(&[windows * beams, 1, d], values(windows * beams * d, 4)).unwrap();
        let k = Tensor::from_f32(&[windows, tk, d], values(windows * tk * d, 5)).unwrap();
        let v = Tensor::from_f32(&[windows, tk, d], values(windows * tk * d, 6)).unwrap();
        let mut none: [Tensor; 0] = [];
        let together = op
            .eval(&mut EvalContext::new(&mut none), &[&q, &k, &v])
            .unwrap();
        let together = together[0].f32s().unwrap();
        let (qv, kv, vv) = (q.f32s().unwrap(), k.f32s().unwrap(), v.f32s().unwrap());
        for row in 0..windows * beams {
            let w = row / beams;
            let q1 = Tensor::from_f32(&[1, 1, d], qv[row * d..(row + 1) * d].to_vec()).unwrap();
            let k1 = Tensor::from_f32(&[tk, d], kv[w * tk * d..(w + 1) * tk * d].to_vec()).unwrap();
            let v1 = Tensor::from_f32(&[tk, d], vv[w * tk * d..(w + 1) * tk * d].to_vec()).unwrap();
            let alone = op
                .eval(&mut EvalContext::new(&mut none), &[&q1, &k1, &v1])
                .unwrap();
            assert_eq!(
                &together[row * d..(row + 1) * d],
                alone[0].f32s().unwrap(),
                "row {row} (window {w})"
            );
        }
    }

    #[test]
    fn mismatched_batches_are_refused_in_inference_and_at_run_time() {
        let op = attention(2);
        let err = op
            .infer(
                &[known(&[6, 2, 8]), known(&[4, 5, 8]), known(&[4, 5, 8])],
                &[],
            )
            .unwrap_err();
        assert!(err.0.contains("not a multiple of k's batch 4"), "{err}");
        op.infer(
            &[known(&[6, 2, 8]), known(&[3, 5, 8]), known(&[3, 5, 8])],
            &[],
        )
        .unwrap();
        let q = Tensor::from_f32(&[6, 2, 8], values(96, 1)).unwrap();
        let k = Tensor::from_f32(&[4, 5, 8], values(160, 2)).unwrap();
        let mut none: [Tensor; 0] = [];
        let err = op
            .eval(&mut EvalContext::new(&mut none), &[&q, &k, &k])
            .unwrap_err();
        assert!(err.0.contains("disagree on leading dims"), "{err}");
    }

    fn attention_with(heads: usize, extra: serde_json::Value) -> Box<dyn Operator> {
        let mut a = std::collections::BTreeMap::new();
        a.insert("heads".to_string(), serde_json::json!(heads));
        a.insert("kv_heads_major".to_string(), serde_json::json!(true));
        for (k, v) in extra.as_object().unwrap() {
            a.insert(k.clone(), v.clone());
        }
        AttentionDef.build(&Attrs(a)).unwrap()
    }

    /// `[.., tk, heads·hd]` rows as `[.., heads, tk, hd]`, in `t`'s type.
    fn by_head(t: &Tensor, heads: usize) -> Tensor {
        let split = crate::ops::tensor_ops::SplitHeadsDef
            .build(&Attrs(
                [("heads".to_string(), serde_json::json!(heads))]
                    .into_iter()
                    .collect(),
            ))
            .unwrap();
        let mut none: [Tensor; 0] = [];
        split
            .eval(&mut EvalContext::new(&mut none), &[t])
            .unwrap()
            .remove(0)
    }

    #[test]
    fn keys_stored_by_head_give_the_bits_of_rows_of_heads() {
        // The decoder's cross-attention at the int8 compute type: f16 K/V stored by head,
        // read by a step's beams of several windows (the f16 fast path), by a window's
        // prompt (many rows, the widening path) and with the weights output (alignment).
        // Each must give the bits of the same attention on rows of interleaved heads.
        let (windows, beams, tk, heads, hd) = (2, 3, 1500, 8, 64);
        let d = heads * hd;
        let k = Tensor::from_f32(&[windows, tk, d], values(windows * tk * d, 7)).unwrap();
        let v = Tensor::from_f32(&[windows, tk, d], values(windows * tk * d, 8)).unwrap();
        let mut none: [Tensor; 0] = [];
        for (tq, extra) in [
            (1, serde_json::json!({})),
            (40, serde_json::json!({})),
            (3, serde_json::json!({"return_weights": true})),
        ] {
            let q = Tensor::from_f32(
                &[windows * beams, tq, d],
                values(windows * beams * tq * d, 9),
            )
            .unwrap();
            for kv16 in [true, false] {
                let (k, v) = if kv16 {
                    (k.narrow_to_f16().unwrap(), v.narrow_to_f16().unwrap())
                } else {
                    (k.clone(), v.clone())
                };
                let mut plain_attrs = extra.clone();
                plain_attrs["kv_heads_major"] = serde_json::json!(false);
                let plain = attention_with(heads, plain_attrs)
                    .eval(&mut EvalContext::new(&mut none), &[&q, &k, &v])
                    .unwrap();
                let (kh, vh) = (by_head(&k, heads), by_head(&v, heads));
                assert_eq!(kh.shape(), [windows, heads, tk, hd]);
                let op = attention_with(heads, extra.clone());
                let types: Vec<ValueType> = [&q, &kh, &vh]
                    .iter()
                    .map(|t| {
                        ValueType::new(
                            t.dtype(),
                            t.shape().iter().map(|&n| Dim::Known(n)).collect(),
                        )
                    })
                    .collect();
                let inferred = op.infer(&types, &[]).unwrap();
                let got = op
                    .eval(&mut EvalContext::new(&mut none), &[&q, &kh, &vh])
                    .unwrap();
                let what = format!("tq {tq}, {extra}, f16 {kv16}");
                assert_eq!(got.len(), plain.len(), "{what}");
                for (i, (g, p)) in got.iter().zip(&plain).enumerate() {
                    assert_eq!(g.shape(), p.shape(), "{what}: output {i}");
                    assert_eq!(
                        inferred[i].shape,
                        g.shape().iter().map(|&n| Dim::Known(n)).collect::<Vec<_>>(),
                        "{what}: inferred output {i}"
                    );
                    let bits = |t: &Tensor| -> Vec<u32> {
                        t.f32s().unwrap().iter().map(|x| x.to_bits()).collect()
                    };
                    assert!(bits(g) == bits(p), "{what}: output {i} differs");
                }
            }
        }
    }

    #[test]
    fn keys_by_head_of_the_wrong_shape_are_refused() {
        let op = attention_with(2, serde_json::json!({}));
        let q = known(&[1, 8]);
        for (k, want) in [
            (known(&[5, 8]), "expected [.., heads, tk, head_dim]"),
            (known(&[3, 5, 4]), "heads"),
            (known(&[2, 5, 3]), "head size 3 times 2 heads"),
        ] {
            let err = op.infer(&[q.clone(), k.clone(), k], &[]).unwrap_err();
            assert!(err.0.contains(want), "{err}");
        }
        let qt = Tensor::from_f32(&[1, 8], values(8, 1)).unwrap();
        let kt = Tensor::from_f32(&[3, 5, 4], values(60, 2)).unwrap();
        let mut none: [Tensor; 0] = [];
        let err = op
            .eval(&mut EvalContext::new(&mut none), &[&qt, &kt, &kt])
            .unwrap_err();
        assert!(err.0.contains("kv_heads_major"), "{err}");
        assert!(
            op.kernel("npu").is_none(),
            "no NPU kernel reads keys by head"
        );
    }

    #[test]
    fn caches_stored_by_head_give_the_bits_of_caches_in_rows() {
        // A prompt of 7 tokens, then single-token steps, for 3 sequences: each output of
        // the cache stored by head equals the cache in rows, bit for bit.
        let (batch, heads, hd, cap) = (3, 4, 16, 24);
        let d = heads * hd;
        let build = |heads_major: bool| {
            let mut a = std::collections::BTreeMap::new();
            a.insert("heads".to_string(), serde_json::json!(heads));
            a.insert("heads_major".to_string(), serde_json::json!(heads_major));
            KvCacheAttentionDef.build(&Attrs(a)).unwrap()
        };
        let (rows_op, by_head_op) = (build(false), build(true));
        let mut rows_states = vec![
            Tensor::zeros(DType::F32, &[batch, cap, d]),
            Tensor::zeros(DType::F32, &[batch, cap, d]),
        ];
        let mut head_states = vec![
            Tensor::zeros(DType::F32, &[batch, heads, cap, hd]),
            Tensor::zeros(DType::F32, &[batch, heads, cap, hd]),
        ];
        let f32_types = |n: usize| {
            let t = known(&[batch, n, d]);
            vec![t.clone(), t.clone(), t, ValueType::new(DType::I32, vec![])]
        };
        let state_types = vec![known(&[batch, heads, cap, hd]); 2];
        by_head_op.infer(&f32_types(1), &state_types).unwrap();
        let mut offset = 0;
        for (step, n) in [7usize, 1, 1, 1].into_iter().enumerate() {
            let seed = 10 * step as u32;
            let t =
                |s: u32| Tensor::from_f32(&[batch, n, d], values(batch * n * d, seed + s)).unwrap();
            let (q, k, v) = (t(1), t(2), t(3));
            let off = Tensor::scalar_i32(offset as i32);
            let a = rows_op
                .eval(&mut EvalContext::new(&mut rows_states), &[&q, &k, &v, &off])
                .unwrap();
            let b = by_head_op
                .eval(&mut EvalContext::new(&mut head_states), &[&q, &k, &v, &off])
                .unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                t.f32s().unwrap().iter().map(|x| x.to_bits()).collect()
            };
            assert!(
                bits(&a[0]) == bits(&b[0]),
                "step {step} ({n} tokens at {offset})"
            );
            offset += n;
        }
        // The caches hold the same values, each head's positions contiguous.
        let (r, h) = (
            rows_states[0].f32s().unwrap(),
            head_states[0].f32s().unwrap(),
        );
        for b in 0..batch {
            for p in 0..offset {
                for hh in 0..heads {
                    assert_eq!(
                        &r[(b * cap + p) * d + hh * hd..][..hd],
                        &h[((b * heads + hh) * cap + p) * hd..][..hd]
                    );
                }
            }
        }
        // A state in the other layout is refused, naming the expected one.
        let q = Tensor::from_f32(&[batch, 1, d], values(batch * d, 1)).unwrap();
        let off = Tensor::scalar_i32(0);
        let err = by_head_op
            .eval(&mut EvalContext::new(&mut rows_states), &[&q, &q, &q, &off])
            .unwrap_err();
        assert!(
            err.0
                .contains(&format!("[{batch}, {heads}, capacity, {hd}]")),
            "{err}"
        );
        let err = by_head_op
            .infer(
                &f32_types(1),
                &[known(&[batch, cap, d]), known(&[batch, cap, d])],
            )
            .unwrap_err();
        assert!(err.0.contains("rank"), "{err}");
    }
}
