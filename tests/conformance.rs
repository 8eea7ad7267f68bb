//! One conformance suite, instantiated per device: every standard op that takes generated
//! inputs becomes a one-node graph with random static shapes and values, is planned for
//! the device and run through its program, and is compared with the same graph run on the
//! host within the op's bound ([`check_close`]). The plan must put the node on the device
//! exactly when the device says it supports it, and on the devices with catalogue kernels
//! the nodes those kernels take must be on the device, so the suite cannot pass by running
//! everything on the host. A device fault would make the session re-run on the CPU, so
//! every run must report no fallback. Cases are drawn from a fixed seed (reproducible).

use amanuensis_operators::standard_registry;
use amanuensis_runtime::device::{with_view, CpuDevice, Device, Support, HOST};
use amanuensis_runtime::format::{Dim, GraphDef, NodeDef, ValueDecl, WeightDecl};
use amanuensis_runtime::npu::{NpuParams, NpuSim};
use amanuensis_runtime::schedule::{plan, SchedulerOptions};
use amanuensis_runtime::{
    Attrs, DType, EvalContext, Graph, Operator, Registry, Session, Tensor, ValueType, WeightStore,
};
use amanuensis_xrt::{KernelEntry, NpuXrtOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Generated cases per op and device.
const CASES_PER_OP: u32 = 16;

/// Ops of the standard registry the suite does not generate, and why.
const SKIPPED: &[(&str, &str)] = &[(
    "log_mel",
    "its input is a recording and its attributes are an STFT's settings; it has no device \
     kernel and tests/audio_* compare it with reference spectrograms",
)];

/// The ops the reference device runs (its four catalogue kernels).
const REFERENCE_OPS: [&str; 4] = ["linear", "layer_norm", "gelu", "add"];

/// One input of the node: a graph input, or a weight (uploaded once by device programs).
#[derive(Clone)]
struct Arg {
    tensor: Tensor,
    weight: bool,
}

/// One node to test.
#[derive(Clone)]
struct Case {
    op: &'static str,
    attrs: BTreeMap<String, Value>,
    args: Vec<Arg>,
    /// Shapes of the node's state tensors (zeroed before the run).
    states: Vec<Vec<usize>>,
    /// Whether the NPU catalogue kernel of the op takes these inputs, so the NPU family's
    /// devices must run the node.
    npu: bool,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                let kind = if a.weight { "weight" } else { "input" };
                format!("{kind} {}{:?}", a.tensor.dtype(), a.tensor.shape())
            })
            .collect();
        write!(
            f,
            "{} {:?} [{}] states {:?}",
            self.op,
            self.attrs,
            args.join(", "),
            self.states
        )
    }
}

/// Seeded values from a case's seed (the shapes are proptest's, the values not, so large
/// tensors cost no strategy work).
struct Values(fastrand::Rng);

impl Values {
    fn new(seed: u64) -> Values {
        Values(fastrand::Rng::with_seed(seed))
    }

    /// Uniform in [-scale, scale).
    fn f32(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n = shape.iter().product();
        let v = (0..n).map(|_| (self.0.f32() * 2.0 - 1.0) * scale).collect();
        Tensor::from_f32(shape, v).unwrap()
    }

    /// Uniform in 0..limit.
    fn ids(&mut self, shape: &[usize], limit: usize) -> Tensor {
        let n = shape.iter().product();
        let v = (0..n).map(|_| self.0.usize(..limit) as i32).collect();
        Tensor::from_i32(shape, v).unwrap()
    }
}

fn input(tensor: Tensor) -> Arg {
    Arg {
        tensor,
        weight: false,
    }
}

fn weight(tensor: Tensor) -> Arg {
    Arg {
        tensor,
        weight: true,
    }
}

fn attrs(v: Value) -> BTreeMap<String, Value> {
    v.as_object().unwrap().clone().into_iter().collect()
}

fn case(op: &'static str, a: Value, args: Vec<Arg>, npu: bool) -> Case {
    Case {
        op,
        attrs: attrs(a),
        args,
        states: Vec::new(),
        npu,
    }
}

fn cat(lead: &[usize], last: &[usize]) -> Vec<usize> {
    lead.iter().chain(last).copied().collect()
}

/// `linear`, `linear_gelu`: x `[lead.., k]`; the catalogue GEMM flattens x to `[M, K]`,
/// so a rank-1 x stays on the host.
fn linear_like(op: &'static str) -> BoxedStrategy<Case> {
    (
        prop::collection::vec(1usize..=5, 0..=2),
        1usize..=48,
        1usize..=40,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(move |(lead, k, n, bias, seed)| {
            let mut r = Values::new(seed);
            let mut args = vec![
                input(r.f32(&cat(&lead, &[k]), 1.0)),
                weight(r.f32(&[n, k], 0.5)),
            ];
            if bias {
                args.push(weight(r.f32(&[n], 0.5)));
            }
            case(op, json!({}), args, !lead.is_empty())
        })
        .boxed()
}

/// `linear`, `linear_gelu` with a layer norm of x first (`norm_eps`, inputs `[x, gamma,
/// beta, w, b?]`): the fusion of a layer norm into the product that follows it, which no
/// catalogue kernel takes.
fn normed_linear_like(op: &'static str) -> BoxedStrategy<Case> {
    (
        prop::collection::vec(1usize..=5, 0..=2),
        2usize..=48,
        1usize..=40,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(move |(lead, k, n, bias, seed)| {
            let mut r = Values::new(seed);
            let mut args = vec![
                input(r.f32(&cat(&lead, &[k]), 1.0)),
                weight(r.f32(&[k], 1.0)),
                weight(r.f32(&[k], 0.5)),
                weight(r.f32(&[n, k], 0.5)),
            ];
            if bias {
                args.push(weight(r.f32(&[n], 0.5)));
            }
            case(op, json!({"norm_eps": 1e-5}), args, false)
        })
        .boxed()
}

/// `linear_group`: two or three weights of one input, each with or without a bias, after
/// a layer norm or not. The host's op: no device kernel.
fn linear_group() -> BoxedStrategy<Case> {
    (
        prop::collection::vec(1usize..=5, 0..=2),
        2usize..=48,
        prop::collection::vec((1usize..=40, any::<bool>()), 2..=3),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(lead, k, parts, norm, seed)| {
            let mut r = Values::new(seed);
            let mut args = vec![input(r.f32(&cat(&lead, &[k]), 1.0))];
            let mut at = json!({"bias": parts.iter().map(|p| p.1).collect::<Vec<_>>()});
            if norm {
                args.push(weight(r.f32(&[k], 1.0)));
                args.push(weight(r.f32(&[k], 0.5)));
                at["norm_eps"] = json!(1e-5);
            }
            for &(n, bias) in &parts {
                args.push(weight(r.f32(&[n, k], 0.5)));
                if bias {
                    args.push(weight(r.f32(&[n], 0.5)));
                }
            }
            case("linear_group", at, args, false)
        })
        .boxed()
}

fn linear_residual() -> BoxedStrategy<Case> {
    (
        prop::collection::vec(1usize..=5, 0..=2),
        1usize..=48,
        1usize..=40,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(lead, k, n, bias, seed)| {
            let mut r = Values::new(seed);
            let mut args = vec![
                input(r.f32(&cat(&lead, &[k]), 1.0)),
                weight(r.f32(&[n, k], 0.5)),
            ];
            if bias {
                args.push(weight(r.f32(&[n], 0.5)));
            }
            args.push(input(r.f32(&cat(&lead, &[n]), 2.0)));
            case(
                "linear_residual",
                json!({ "bias": bias }),
                args,
                !lead.is_empty(),
            )
        })
        .boxed()
}

fn layer_norm() -> BoxedStrategy<Case> {
    (
        prop::collection::vec(1usize..=5, 0..=2),
        8usize..=96,
        any::<u64>(),
    )
        .prop_map(|(lead, d, seed)| {
            let mut r = Values::new(seed);
            let args = vec![
                input(r.f32(&cat(&lead, &[d]), 3.0)),
                weight(r.f32(&[d], 1.5)),
                weight(r.f32(&[d], 0.5)),
            ];
            case("layer_norm", json!({"eps": 1e-5}), args, true)
        })
        .boxed()
}

fn gelu() -> BoxedStrategy<Case> {
    (prop::collection::vec(1usize..=9, 1..=3), any::<u64>())
        .prop_map(|(shape, seed)| {
            let x = Values::new(seed).f32(&shape, 6.0);
            case("gelu", json!({}), vec![input(x)], true)
        })
        .boxed()
}

/// `add`: b of a's shape, a `[T, D]` block of it, or a vector over its rows; the
/// catalogue's `residual_add` takes the first two only.
fn add() -> BoxedStrategy<Case> {
    (
        prop::collection::vec(1usize..=6, 3),
        1usize..=3,
        0u8..3,
        any::<u64>(),
    )
        .prop_map(|(dims, rank, mode, seed)| {
            let mut r = Values::new(seed);
            let (a, b, npu) = match mode {
                0 => (dims[..rank].to_vec(), dims[..rank].to_vec(), true),
                1 => (dims.clone(), dims[1..].to_vec(), true),
                _ => (
                    dims[..rank.max(2)].to_vec(),
                    vec![dims[rank.max(2) - 1]],
                    false,
                ),
            };
            let args = vec![input(r.f32(&a, 2.0)), input(r.f32(&b, 2.0))];
            case("add", json!({}), args, npu)
        })
        .boxed()
}

/// `attention`: q `[batch?, tq, d]`, k and v shared `[tk, d]` or per batch; the flash
/// kernel never forms the probabilities, so `return_weights` stays on the host.
fn attention() -> BoxedStrategy<Case> {
    (
        (1usize..=3, 1usize..=12, 1usize..=12, 1usize..=12),
        (0usize..=2, any::<bool>(), any::<bool>(), any::<bool>()),
        any::<u64>(),
    )
        .prop_map(
            |((heads, hd, tq, tk), (batch, shared, causal, weights), seed)| {
                let mut r = Values::new(seed);
                let d = heads * hd;
                let tk = if causal { tk.max(tq) } else { tk };
                let lead: Vec<usize> = (batch > 0).then_some(batch).into_iter().collect();
                let kv_lead: &[usize] = if shared { &[] } else { &lead };
                let args = vec![
                    input(r.f32(&cat(&lead, &[tq, d]), 1.0)),
                    input(r.f32(&cat(kv_lead, &[tk, d]), 1.0)),
                    input(r.f32(&cat(kv_lead, &[tk, d]), 1.0)),
                ];
                let a = json!({"heads": heads, "causal": causal, "return_weights": weights});
                case("attention", a, args, !weights)
            },
        )
        .boxed()
}

/// K and V stored by head (`kv_heads_major`), f32 or f16: no NPU kernel takes them.
fn attention_heads_major() -> BoxedStrategy<Case> {
    (
        (1usize..=3, 1usize..=12, 1usize..=6, 1usize..=12),
        (0usize..=2, any::<bool>(), any::<bool>(), any::<bool>()),
        (any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |((heads, hd, tq, tk), (batch, shared, causal, weights), (f16, seed))| {
                let mut r = Values::new(seed);
                let d = heads * hd;
                let tk = if causal { tk.max(tq) } else { tk };
                let lead: Vec<usize> = (batch > 0).then_some(batch).into_iter().collect();
                let kv_lead: &[usize] = if shared { &[] } else { &lead };
                let kv = |r: &mut Values| {
                    let t = r.f32(&cat(kv_lead, &[heads, tk, hd]), 1.0);
                    if f16 {
                        narrow(&t)
                    } else {
                        t
                    }
                };
                let args = vec![
                    input(r.f32(&cat(&lead, &[tq, d]), 1.0)),
                    input(kv(&mut r)),
                    input(kv(&mut r)),
                ];
                let a = json!({
                    "heads": heads,
                    "causal": causal,
                    "return_weights": weights,
                    "kv_heads_major": true,
                });
                case("attention", a, args, false)
            },
        )
        .boxed()
}

/// `t` rounded to f16.
fn narrow(t: &Tensor) -> Tensor {
    t.narrow_to_f16().unwrap()
}

/// `split_heads`, f32 or f16, with up to two leading dims: a layout change on the host.
fn split_heads() -> BoxedStrategy<Case> {
    (
        (0usize..=2, 1usize..=20, 1usize..=4, 1usize..=8),
        (any::<bool>(), any::<u64>()),
    )
        .prop_map(|((lead, t, heads, hd), (f16, seed))| {
            let mut r = Values::new(seed);
            let shape = cat(&vec![2; lead], &[t, heads * hd]);
            let x = r.f32(&shape, 1.0);
            let x = if f16 { narrow(&x) } else { x };
            case(
                "split_heads",
                json!({"heads": heads}),
                vec![input(x)],
                false,
            )
        })
        .boxed()
}

/// `kv_cache_attention` keeps its caches as state: host-resident on every device. Both
/// cache layouts: rows, and stored by head.
fn kv_cache_attention() -> BoxedStrategy<Case> {
    (
        (1usize..=2, 1usize..=8, 1usize..=2, 1usize..=4),
        (0usize..=6, any::<bool>(), any::<u64>()),
    )
        .prop_map(|((heads, hd, batch, n), (spare, heads_major, seed))| {
            let mut r = Values::new(seed);
            let d = heads * hd;
            let cap = n + spare;
            let offset = r.0.i32(0..=spare as i32);
            let qkv = [batch, n, d];
            let args = vec![
                input(r.f32(&qkv, 1.0)),
                input(r.f32(&qkv, 1.0)),
                input(r.f32(&qkv, 1.0)),
                input(Tensor::scalar_i32(offset)),
            ];
            let a = json!({"heads": heads, "heads_major": heads_major});
            let mut c = case("kv_cache_attention", a, args, false);
            c.states = if heads_major {
                vec![vec![batch, heads, cap, hd]; 2]
            } else {
                vec![vec![batch, cap, d]; 2]
            };
            c
        })
        .boxed()
}

/// Rank 3: each matrix of a batch (the batched encoder's layout change); no device kernel
/// takes it.
fn transpose_batched() -> BoxedStrategy<Case> {
    (1usize..=4, 1usize..=40, 1usize..=40, any::<u64>())
        .prop_map(|(batch, rows, cols, seed)| {
            let x = Values::new(seed).f32(&[batch, rows, cols], 1.0);
            case("transpose", json!({}), vec![input(x)], false)
        })
        .boxed()
}

fn transpose() -> BoxedStrategy<Case> {
    (1usize..=70, 1usize..=70, any::<u64>())
        .prop_map(|(rows, cols, seed)| {
            let x = Values::new(seed).f32(&[rows, cols], 1.0);
            case("transpose", json!({}), vec![input(x)], true)
        })
        .boxed()
}

fn embedding() -> BoxedStrategy<Case> {
    (
        prop::collection::vec(1usize..=5, 1..=2),
        1usize..=20,
        1usize..=16,
        any::<u64>(),
    )
        .prop_map(|(ids, v, d, seed)| {
            let mut r = Values::new(seed);
            let args = vec![input(r.ids(&ids, v)), weight(r.f32(&[v, d], 1.0))];
            case("embedding", json!({}), args, false)
        })
        .boxed()
}

fn position_embedding() -> BoxedStrategy<Case> {
    (1usize..=6, 0usize..=6, 1usize..=16, any::<u64>())
        .prop_map(|(n, spare, d, seed)| {
            let mut r = Values::new(seed);
            let offset = r.0.i32(0..=spare as i32);
            let args = vec![
                input(r.ids(&[1, n], 50)),
                input(Tensor::scalar_i32(offset)),
                weight(r.f32(&[n + spare, d], 1.0)),
            ];
            case("position_embedding", json!({}), args, false)
        })
        .boxed()
}

fn take() -> BoxedStrategy<Case> {
    (
        prop::collection::vec(1usize..=6, 1..=3),
        any::<prop::sample::Index>(),
        any::<bool>(),
        1usize..=6,
        any::<u64>(),
    )
        .prop_map(|(shape, axis, from_end, k, seed)| {
            let mut r = Values::new(seed);
            let axis = axis.index(shape.len());
            let a = if from_end {
                axis as i64 - shape.len() as i64
            } else {
                axis as i64
            };
            let args = vec![input(r.f32(&shape, 1.0)), input(r.ids(&[k], shape[axis]))];
            case("take", json!({ "axis": a }), args, false)
        })
        .boxed()
}

fn conv1d_like(op: &'static str) -> BoxedStrategy<Case> {
    (
        (1usize..=8, 1usize..=30, 1usize..=8, 1usize..=5),
        (1usize..=3, 0usize..=2, any::<u64>()),
    )
        .prop_map(move |((c_in, t, c_out, k), (stride, padding, seed))| {
            let mut r = Values::new(seed);
            let args = vec![
                input(r.f32(&[c_in, t.max(k)], 1.0)),
                weight(r.f32(&[c_out, c_in, k], 0.5)),
                weight(r.f32(&[c_out], 0.5)),
            ];
            case(
                op,
                json!({"stride": stride, "padding": padding}),
                args,
                true,
            )
        })
        .boxed()
}

/// `relu`, `sigmoid`: element-wise, no device kernel.
fn activation(op: &'static str) -> BoxedStrategy<Case> {
    (prop::collection::vec(1usize..=9, 1..=3), any::<u64>())
        .prop_map(move |(shape, seed)| {
            let x = Values::new(seed).f32(&shape, 6.0);
            case(op, json!({}), vec![input(x)], false)
        })
        .boxed()
}

/// `squeeze` and `unsqueeze` of a random axis.
fn squeeze_like(op: &'static str) -> BoxedStrategy<Case> {
    (
        prop::collection::vec(1usize..=5, 1..=3),
        any::<prop::sample::Index>(),
        any::<u64>(),
    )
        .prop_map(move |(mut shape, axis, seed)| {
            let a = if op == "squeeze" {
                let a = axis.index(shape.len());
                shape[a] = 1;
                a
            } else {
                axis.index(shape.len() + 1)
            };
            let x = Values::new(seed).f32(&shape, 1.0);
            case(op, json!({ "axis": a }), vec![input(x)], false)
        })
        .boxed()
}

fn slice() -> BoxedStrategy<Case> {
    (
        prop::collection::vec(1usize..=6, 1..=3),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any::<u64>(),
    )
        .prop_map(|(shape, axis, a, b, seed)| {
            let axis = axis.index(shape.len());
            let start = a.index(shape[axis]);
            let end = start + 1 + b.index(shape[axis] - start);
            let x = Values::new(seed).f32(&shape, 1.0);
            let at = json!({"axis": axis, "start": start, "end": end});
            case("slice", at, vec![input(x)], false)
        })
        .boxed()
}

fn pad_reflect() -> BoxedStrategy<Case> {
    (
        prop::collection::vec(1usize..=4, 0..=2),
        2usize..=12,
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any::<u64>(),
    )
        .prop_map(|(lead, len, before, after, seed)| {
            let x = Values::new(seed).f32(&cat(&lead, &[len]), 1.0);
            let at = json!({"before": before.index(len), "after": after.index(len)});
            case("pad_reflect", at, vec![input(x)], false)
        })
        .boxed()
}

fn magnitude() -> BoxedStrategy<Case> {
    (
        prop::collection::vec(1usize..=4, 1..=3),
        any::<prop::sample::Index>(),
        any::<u64>(),
    )
        .prop_map(|(mut shape, axis, seed)| {
            let a = axis.index(shape.len());
            shape[a] *= 2;
            let x = Values::new(seed).f32(&shape, 2.0);
            case("magnitude", json!({ "axis": a }), vec![input(x)], false)
        })
        .boxed()
}

/// `lstm` keeps h and c as state: host-resident on every device.
fn lstm() -> BoxedStrategy<Case> {
    (1usize..=6, 1usize..=5, 1usize..=6, any::<u64>())
        .prop_map(|(seq, input_size, hidden, seed)| {
            let mut r = Values::new(seed);
            let args = vec![
                input(r.f32(&[seq, input_size], 1.0)),
                weight(r.f32(&[4 * hidden, input_size], 0.5)),
                weight(r.f32(&[4 * hidden, hidden], 0.5)),
                weight(r.f32(&[8 * hidden], 0.5)),
            ];
            let mut c = case("lstm", json!({}), args, false);
            c.states = vec![vec![hidden]; 2];
            c
        })
        .boxed()
}

/// `conv1d` with a batch dim or without a bias: the catalogue kernel takes neither.
fn conv1d_batched() -> BoxedStrategy<Case> {
    (
        (1usize..=3, 1usize..=6, 1usize..=20, 1usize..=6, 1usize..=4),
        (1usize..=3, 0usize..=2, any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |((batch, c_in, t, c_out, k), (stride, padding, bias, seed))| {
                let mut r = Values::new(seed);
                let mut args = vec![
                    input(r.f32(&[batch, c_in, t.max(k)], 1.0)),
                    weight(r.f32(&[c_out, c_in, k], 0.5)),
                ];
                if bias {
                    args.push(weight(r.f32(&[c_out], 0.5)));
                }
                let at = json!({"stride": stride, "padding": padding});
                case("conv1d", at, args, false)
            },
        )
        .boxed()
}

/// The generator of every op the suite covers.
fn generators() -> Vec<(&'static str, BoxedStrategy<Case>)> {
    vec![
        ("linear", linear_like("linear")),
        ("linear_gelu", linear_like("linear_gelu")),
        ("linear", normed_linear_like("linear")),
        ("linear_gelu", normed_linear_like("linear_gelu")),
        ("linear_group", linear_group()),
        ("linear_residual", linear_residual()),
        ("layer_norm", layer_norm()),
        ("gelu", gelu()),
        ("add", add()),
        ("attention", attention()),
        ("attention", attention_heads_major()),
        ("split_heads", split_heads()),
        ("kv_cache_attention", kv_cache_attention()),
        ("transpose", transpose()),
        ("transpose", transpose_batched()),
        ("embedding", embedding()),
        ("position_embedding", position_embedding()),
        ("take", take()),
        ("conv1d", conv1d_like("conv1d")),
        ("conv1d_gelu", conv1d_like("conv1d_gelu")),
        ("conv1d", conv1d_batched()),
        ("relu", activation("relu")),
        ("sigmoid", activation("sigmoid")),
        ("squeeze", squeeze_like("squeeze")),
        ("unsqueeze", squeeze_like("unsqueeze")),
        ("slice", slice()),
        ("pad_reflect", pad_reflect()),
        ("magnitude", magnitude()),
        ("lstm", lstm()),
    ]
}

/// A case for a kernel variant of an XRT manifest: the op that offers the kernel, the
/// entry's attributes and input shapes, weights where the model has them.
fn manifest_case(e: &KernelEntry, seed: u64) -> Case {
    let mut r = Values::new(seed);
    let shapes = &e.variant.0;
    // Which inputs are weights, per kernel.
    let (op, weights): (&'static str, &[usize]) = match e.kernel.as_str() {
        "matmul_bias" => ("linear", &[1, 2]),
        "matmul_bias_gelu" => ("linear_gelu", &[1, 2]),
        "matmul_bias_residual" if shapes.len() == 4 => ("linear_residual", &[1, 2]),
        "matmul_bias_residual" => ("linear_residual", &[1]),
        "layer_norm" => ("layer_norm", &[1, 2]),
        "gelu" => ("gelu", &[]),
        "residual_add" => ("add", &[]),
        "transpose" => ("transpose", &[]),
        "attention_flash" => ("attention", &[]),
        "conv1d" => ("conv1d", &[1, 2]),
        "conv1d_gelu" => ("conv1d_gelu", &[1, 2]),
        k => panic!("the suite has no node for manifest kernel '{k}': add it to manifest_case"),
    };
    let args = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| Arg {
            tensor: r.f32(s, if weights.contains(&i) { 0.5 } else { 1.0 }),
            weight: weights.contains(&i),
        })
        .collect();
    Case {
        op,
        attrs: e.attrs.clone(),
        args,
        states: Vec::new(),
        npu: true,
    }
}

/// The op of a case, built from the registry.
fn build_op(reg: &Registry, op: &str, a: &BTreeMap<String, Value>) -> Box<dyn Operator> {
    reg.get(op)
        .unwrap_or_else(|| panic!("op {op} is registered"))
        .build(&Attrs(a.clone().into_iter().collect()))
        .unwrap_or_else(|e| panic!("{op} {a:?}: {e}"))
}

fn types(ts: &[&Tensor]) -> Vec<ValueType> {
    ts.iter()
        .map(|t| {
            ValueType::new(
                t.dtype(),
                t.shape().iter().map(|&d| Dim::Known(d)).collect(),
            )
        })
        .collect()
}

fn decl(name: String, t: &ValueType) -> ValueDecl {
    ValueDecl {
        name,
        dtype: t.dtype,
        shape: t.shape.clone(),
    }
}

/// The one-node graph of a case, its weights and its graph inputs.
fn graph_of(reg: &Registry, c: &Case) -> (Graph, Graph, WeightStore, Vec<Tensor>) {
    let op = build_op(reg, c.op, &c.attrs);
    let tensors: Vec<&Tensor> = c.args.iter().map(|a| &a.tensor).collect();
    let state_types: Vec<ValueType> = c.states.iter().map(|s| ValueType::f32(s)).collect();
    let outs = op
        .infer(&types(&tensors), &state_types)
        .unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let names: Vec<String> = c
        .args
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}{i}", if a.weight { "w" } else { "in" }))
        .collect();
    let (mut inputs, mut wdecls, mut wts, mut feed) = (vec![], vec![], vec![], vec![]);
    for ((a, n), t) in c.args.iter().zip(&names).zip(types(&tensors)) {
        if a.weight {
            wdecls.push(WeightDecl {
                name: n.clone(),
                dtype: a.tensor.dtype(),
                shape: a.tensor.shape().to_vec(),
            });
            wts.push((n.clone(), a.tensor.clone()));
        } else {
            inputs.push(decl(n.clone(), &t));
            feed.push(a.tensor.clone());
        }
    }
    let out_names: Vec<String> = (0..outs.len()).map(|j| format!("out{j}")).collect();
    let state_names: Vec<String> = (0..c.states.len()).map(|j| format!("state{j}")).collect();
    let def = GraphDef {
        name: format!("conformance_{}", c.op),
        inputs,
        outputs: out_names
            .iter()
            .zip(&outs)
            .map(|(n, t)| decl(n.clone(), t))
            .collect(),
        states: state_names
            .iter()
            .zip(&state_types)
            .map(|(n, t)| decl(n.clone(), t))
            .collect(),
        nodes: vec![NodeDef {
            name: "node".into(),
            op: c.op.into(),
            inputs: names,
            outputs: out_names,
            states: state_names,
            attrs: c.attrs.clone(),
        }],
    };
    let build = || Graph::build(&def, &wdecls, reg).unwrap_or_else(|e| panic!("{c:?}: {e}"));
    (build(), build(), WeightStore::from_tensors(wts), feed)
}

/// Host evaluation of an op on inputs (the scale of a GEMM-class error bound).
fn host_eval(reg: &Registry, op: &str, a: Value, ins: &[&Tensor]) -> Tensor {
    let op = build_op(reg, op, &attrs(a));
    let mut states: [Tensor; 0] = [];
    op.eval(&mut EvalContext::new(&mut states), ins)
        .unwrap()
        .remove(0)
}

fn abs(t: &Tensor) -> Tensor {
    let v = t.f32s().unwrap().iter().map(|x| x.abs()).collect();
    Tensor::from_f32(t.shape(), v).unwrap()
}

/// Relative error of the bf16-operand GEMM against the f32 one, per unit of
/// `Σ_k |a_k·w_k| + |b|`: rounding both operands to bf16 (unit roundoff 2⁻⁸) moves each
/// product by at most 2⁻⁷ + 2⁻¹⁶; both f32 accumulations add at most γ_K = K·2⁻²⁴ each
/// (2⁻¹² for K = 4096), so 2⁻⁷ + 2⁻¹⁶ + 2⁻¹¹ < 1e-2.
const GEMM_REL: f32 = 1e-2;

/// Largest slope of the exact GELU (at x ≈ 2.4): an error before the activation grows by
/// at most this much through it.
const GELU_SLOPE: f32 = 1.13;

/// Per-element bound of output `k` of a case that ran on a device, against the host's.
/// The devices run the catalogue's bit-exact references; the host runs the CPU kernels.
fn bounds(reg: &Registry, c: &Case, k: usize, host: &Tensor) -> Vec<f32> {
    let h = host.f32s().unwrap();
    let arg = |i: usize| &c.args[i].tensor;
    let per = |f: &dyn Fn(usize, f32) -> f32| h.iter().enumerate().map(|(i, &y)| f(i, y)).collect();
    match c.op {
        // GEMM-class with bf16 operands: GEMM_REL of the scale Σ|a·w| + |b| (the host GEMM
        // on |inputs|), through the GELU's slope, plus a few f32 roundings of the output
        // (bias, residual, the GELU's own).
        "linear" | "linear_gelu" | "linear_residual" | "conv1d" | "conv1d_gelu" => {
            let (lin, a, n_lin) = if c.op.starts_with("conv1d") {
                let a = json!({"stride": c.attrs["stride"], "padding": c.attrs["padding"]});
                ("conv1d", a, 3)
            } else if c.op == "linear_residual" {
                ("linear", json!({}), c.args.len() - 1)
            } else {
                ("linear", json!({}), c.args.len())
            };
            let ins: Vec<Tensor> = (0..n_lin).map(|i| abs(arg(i))).collect();
            let s = host_eval(reg, lin, a, &ins.iter().collect::<Vec<_>>());
            let s = s.f32s().unwrap().to_vec();
            let slope = if c.op.ends_with("gelu") {
                GELU_SLOPE
            } else {
                1.0
            };
            per(&|i, y| GEMM_REL * slope * s[i] + 2f32.powi(-20) * y.abs() + 1e-30)
        }
        // Both f32 with different summation orders: x̂ moves by a few d·2⁻²⁴ relatively
        // (|x̂| < 4 for these uniform rows, 8 or more wide).
        "layer_norm" => {
            let d = *arg(0).shape().last().unwrap();
            let g = arg(1).f32s().unwrap().to_vec();
            per(&|i, y| 1e-5 * (4.0 * g[i % d].abs() + y.abs()))
        }
        // Both evaluate in f64 and round once; the CPU's error is below 1.5e-7 relatively,
        // and the reference's 1 + erf(x/√2) cancels for x < −5 (0.5·|x|·2⁻⁵³ absolute).
        "gelu" => {
            let x = arg(0).f32s().unwrap().to_vec();
            per(&|i, y| 3e-7 * y.abs() + 1e-16 * x[i].abs() + 1e-37)
        }
        // bf16 q, k move the scores and bf16 P, v each term by ~2⁻⁸ relatively; the output
        // is a convex combination of v rows (probabilities are within [0, 1]).
        "attention" | "kv_cache_attention" => {
            let v = arg(2).f32s().unwrap();
            let scale = if k == 0 {
                v.iter().fold(0f32, |m, x| m.max(x.abs()))
            } else {
                1.0
            };
            per(&|_, _| 2e-2 * scale)
        }
        // add (one f32 addition on both), transpose, the lookups: the same bits.
        _ => vec![0.0; h.len()],
    }
}

/// Compares a device's output with the host's: the same bits when the node ran on the
/// host, within [`bounds`] when it ran on a device.
fn check_close(
    reg: &Registry,
    c: &Case,
    k: usize,
    host: &Tensor,
    dev: &Tensor,
    on_device: bool,
) -> Result<(), String> {
    if host.dtype() != dev.dtype() || host.shape() != dev.shape() {
        return Err(format!(
            "output {k}: device {}{:?}, host {}{:?}",
            dev.dtype(),
            dev.shape(),
            host.dtype(),
            host.shape()
        ));
    }
    if host.data() == dev.data() {
        return Ok(());
    }
    if !on_device || host.dtype() != DType::F32 {
        return Err(format!(
            "output {k}: the host ran the node, yet bits differ"
        ));
    }
    let b = bounds(reg, c, k, host);
    let (h, d) = (host.f32s().unwrap(), dev.f32s().unwrap());
    for i in 0..h.len() {
        let err = (h[i] - d[i]).abs();
        // NaN compares false: a NaN on one side only fails here too.
        let within = err <= b[i];
        let both_nan = h[i].is_nan() && d[i].is_nan();
        if !(within || both_nan) {
            return Err(format!(
                "output {k}[{i}]: device {} host {} (|diff| {err:.3e} > bound {:.3e})",
                d[i], h[i], b[i]
            ));
        }
    }
    Ok(())
}

/// Where each case ran.
#[derive(Default)]
struct Tally {
    on_device: BTreeMap<&'static str, usize>,
    on_host: BTreeMap<&'static str, usize>,
}

impl Tally {
    fn line(m: &BTreeMap<&str, usize>) -> String {
        let n: usize = m.values().sum();
        let per: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if per.is_empty() {
            n.to_string()
        } else {
            format!("{n} ({})", per.join(", "))
        }
    }
}

/// Whether a case must run on the device (`Some(true)`), must stay on the host
/// (`Some(false)`), or as the device says (`None`).
type Expect<'a> = &'a dyn Fn(&Case) -> Option<bool>;

/// Plans and runs one case on `device` and on the host; compares.
fn run_case(
    reg: &Registry,
    device: &dyn Device,
    expect: Expect,
    c: &Case,
    tally: &RefCell<Tally>,
) -> Result<(), TestCaseError> {
    let (g_host, g_dev, weights, feed) = graph_of(reg, c);
    let feed: Vec<&Tensor> = feed.iter().collect();
    let mut host = Session::new(Arc::new(g_host), &weights).unwrap();
    host.reset_states(&HashMap::new()).unwrap();
    let want = host
        .run(&feed)
        .unwrap_or_else(|e| panic!("host run of {c:?}: {e}"));

    let p = plan(g_dev, reg, device, &SchedulerOptions::full())
        .map_err(|e| TestCaseError::fail(format!("planning: {e}")))?;
    let ni = p.graph.order[0];
    let support = with_view(&p.graph, &p.graph.nodes[ni], |v| device.supports(v));
    let placed = &p.placements[ni];
    let on_device = placed.device == device.name();
    prop_assert_eq!(
        on_device,
        matches!(support, Support::Yes { .. }),
        "placed on {} ({}), the device answered {:?}",
        placed.device,
        placed.reason,
        support
    );
    if let Some(must) = expect(c) {
        prop_assert_eq!(
            on_device,
            must,
            "expected on the device: {}; placed on {} ({})",
            must,
            placed.device,
            placed.reason
        );
    }
    let mut s = Session::planned(Arc::new(p), &weights, device)
        .map_err(|e| TestCaseError::fail(format!("loading: {e}")))?;
    s.reset_states(&HashMap::new()).unwrap();
    let got = s
        .run(&feed)
        .map_err(|e| TestCaseError::fail(format!("device run: {e}")))?;
    let st = s.stats();
    prop_assert_eq!(
        st.fallbacks,
        0,
        "the device faulted and the run was repeated on the CPU"
    );
    if on_device && device.name() != HOST {
        prop_assert!(st.dispatches >= 1, "no device run was reported");
    }
    prop_assert_eq!(got.len(), want.len());
    for (k, (h, d)) in want.iter().zip(&got).enumerate() {
        check_close(reg, c, k, h, d, on_device && device.name() != HOST)
            .map_err(TestCaseError::fail)?;
    }
    let mut t = tally.borrow_mut();
    let m = if on_device && device.name() != HOST {
        &mut t.on_device
    } else {
        &mut t.on_host
    };
    *m.entry(c.op).or_default() += 1;
    Ok(())
}

/// Runs every generator's cases, then `extra` (fixed cases such as a manifest's, which
/// must run on the device), on `device`; prints where they ran.
fn suite(device: &dyn Device, expect: Expect, extra: &[Case]) -> Tally {
    let reg = standard_registry();
    let tally = RefCell::new(Tally::default());
    for (op, strategy) in generators() {
        let config = Config {
            cases: CASES_PER_OP,
            failure_persistence: None,
            ..Config::default()
        };
        let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
        let mut runner = TestRunner::new_with_rng(config, rng);
        if let Err(e) = runner.run(&strategy, |c| run_case(&reg, device, expect, &c, &tally)) {
            panic!("device {}, op {op}: {e}", device.name());
        }
    }
    for c in extra {
        if let Err(e) = run_case(&reg, device, &|_| Some(true), c, &tally) {
            panic!("device {}, {c:?}: {e}", device.name());
        }
    }
    let t = tally.into_inner();
    println!(
        "{}: {} cases on the device, {} on the host",
        device.name(),
        Tally::line(&t.on_device),
        Tally::line(&t.on_host)
    );
    t
}

#[test]
fn every_standard_op_is_generated_or_skipped_with_a_reason() {
    let generated: Vec<&str> = generators().iter().map(|g| g.0).collect();
    for op in standard_registry().names() {
        assert!(
            generated.contains(&op) || SKIPPED.iter().any(|s| s.0 == op),
            "op '{op}' has neither a generator nor a reason to be skipped"
        );
    }
}

#[test]
fn cpu() {
    let t = suite(&CpuDevice, &|_| Some(true), &[]);
    assert!(t.on_device.is_empty(), "the host's cases are host nodes");
}

#[test]
fn npu_sim() {
    let dev = NpuSim::new(NpuParams::phoenix());
    let t = suite(&dev, &|c| Some(c.npu), &[]);
    assert!(t.on_device.len() >= 10, "{:?}", t.on_device);
}

#[test]
fn reference() {
    let dev = amanuensis_reference_device::ReferenceDevice;
    let t = suite(&dev, &|c| Some(c.npu && REFERENCE_OPS.contains(&c.op)), &[]);
    let mut ops = REFERENCE_OPS.to_vec();
    ops.sort();
    assert_eq!(t.on_device.keys().copied().collect::<Vec<_>>(), ops);
}

/// One case per kernel variant of a manifest (fixed values).
fn manifest_cases(entries: &[KernelEntry]) -> Vec<Case> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| manifest_case(e, i as u64))
        .collect()
}

/// The XRT device's dry run takes only the shipped manifest's variants (whisper-base's
/// shapes): generated shapes stay on the host and every manifest variant must run on it.
#[test]
fn npu_dry() {
    let dev = amanuensis_xrt::dry::dry_device(NpuXrtOptions::default()).unwrap();
    let manifest = amanuensis_xrt::dry::dry_manifest().unwrap();
    let cases = manifest_cases(manifest.entries());
    let t = suite(&dev, &|_| None, &cases);
    assert_eq!(t.on_device.values().sum::<usize>(), cases.len());
}

/// The real NPU: only with an NPU (`/dev/accel`) and compiled kernels
/// (`AMANUENSIS_NPU_KERNELS`); otherwise it says why it did not run.
#[test]
fn npu() {
    let accel = std::path::Path::new("/dev/accel").exists();
    let kernels = std::env::var_os(amanuensis_xrt::KERNELS_ENV).is_some();
    if !accel || !kernels {
        println!(
            "npu: skipped ({}{}{})",
            if accel { "" } else { "no /dev/accel" },
            if !accel && !kernels { ", " } else { "" },
            if kernels {
                String::new()
            } else {
                format!("{} is not set", amanuensis_xrt::KERNELS_ENV)
            }
        );
        return;
    }
    let mut reg = amanuensis_runtime::device::DeviceRegistry::with_host();
    amanuensis_xrt::register_devices(&mut reg).unwrap();
    let dev = reg
        .open("npu")
        .unwrap_or_else(|e| panic!("opening the NPU: {e}"));
    let manifest = amanuensis_xrt::manifest::load_from_env().unwrap();
    let cases = manifest_cases(manifest.entries());
    suite(dev.device.as_ref(), &|_| None, &cases);
}
