//! Shared fixtures: a `linear`-like op whose NPU kernel is the catalogue's `matmul_bias`,
//! a one-node graph, fake xclbins, instruction files and manifests in a temp directory, and
//! a dispatch hook that runs the catalogue reference on the double's device buffers.

#![allow(dead_code)]

pub mod flow;

use amanuensis_kernels::npu::matmul_bias;
use amanuensis_runtime::npu::{KernelWork, NpuBinding, NpuCaps, NpuKernel, TileWork};
use amanuensis_runtime::op::{Attrs, EvalContext, OpDef, Operator, ValueType};
use amanuensis_runtime::{DType, Graph, ModelFile, OpError, Registry, Tensor, WeightStore};
use amanuensis_xrt::double::{fake_xclbin, RunHook, RunView};
use std::path::{Path, PathBuf};

/// The catalogue kernel `matmul_bias` over a node's (x [M, K], w [N, K], b [N]) inputs.
#[derive(Debug)]
pub struct MatmulBiasKernel;

fn dims(inputs: &[&Tensor]) -> Result<(usize, usize, usize), OpError> {
    let (x, w) = (inputs[0], inputs[1]);
    let k = *w
        .shape()
        .get(1)
        .ok_or_else(|| OpError("w must be [N, K]".into()))?;
    let n = w.shape()[0];
    let m = x.numel() / k.max(1);
    Ok((m, k, n))
}

impl NpuKernel for MatmulBiasKernel {
    fn name(&self) -> &str {
        "matmul_bias"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        if !(2..=3).contains(&inputs.len()) || inputs.iter().any(|t| t.dtype != DType::F32) {
            return Err("expects 2 or 3 f32 inputs".into());
        }
        Ok(())
    }

    fn work(&self, _inputs: &[ValueType], _caps: &NpuCaps) -> KernelWork {
        KernelWork {
            steps: 1,
            step: TileWork::default(),
            resident_bytes: 0,
            footprint_double: 41_216,
            footprint_single: 20_608,
            shim_bds: 4,
            macs: 0,
        }
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let (m, k, n) = dims(inputs)?;
        let bias = match inputs.get(2) {
            Some(b) => Some(b.f32s()?),
            None => None,
        };
        let mut out = vec![0.0f32; m * n];
        matmul_bias(
            inputs[0].f32s()?,
            m,
            k,
            inputs[1].f32s()?,
            n,
            bias,
            &mut out,
        )
        .map_err(|e| OpError(e.to_string()))?;
        let mut shape = inputs[0].shape().to_vec();
        *shape.last_mut().expect("x has rank >= 1") = n;
        Ok(vec![Tensor::from_f32(&shape, out)?])
    }
}

/// What `npu_linear` offers the NPU devices.
static MATMUL_BIAS: NpuBinding = NpuBinding::of(&MatmulBiasKernel);

/// `npu_linear`: y = x · wᵀ + b, evaluated with the catalogue reference; takes any attrs.
#[derive(Debug)]
pub struct NpuLinear {
    kernel: MatmulBiasKernel,
}

impl Operator for NpuLinear {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        let mut shape = inputs[0].shape.clone();
        *shape
            .last_mut()
            .ok_or_else(|| OpError("x is a scalar".into()))? = inputs[1].shape[0].clone();
        Ok(vec![ValueType::new(DType::F32, shape)])
    }

    fn eval(&self, _ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        self.kernel.eval(inputs)
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        MATMUL_BIAS.offer(target)
    }
}

struct NpuLinearDef;

impl OpDef for NpuLinearDef {
    fn name(&self) -> &str {
        "npu_linear"
    }

    fn build(&self, _attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        Ok(Box::new(NpuLinear {
            kernel: MatmulBiasKernel,
        }))
    }
}

/// A registry holding `npu_linear`.
pub fn registry() -> Registry {
    let mut reg = Registry::new();
    reg.register(NpuLinearDef).expect("registers");
    reg
}

/// A one-node graph: inputs x [m, k], w [n, k] (and b [n] when `bias`), node `fc`.
pub fn linear_graph(m: usize, k: usize, n: usize, bias: bool, attrs: &str) -> Graph {
    let b_in = if bias {
        format!(r#",{{"name":"b","dtype":"f32","shape":[{n}]}}"#)
    } else {
        String::new()
    };
    let b_use = if bias { r#","b""# } else { "" };
    let text = format!(
        r#"{{
      "format": "amanuensis-graph", "version": 1,
      "model": {{"name": "t", "family": "t", "hyper_parameters": {{}}}},
      "weights": [],
      "graphs": [{{
        "name": "main",
        "inputs": [{{"name":"x","dtype":"f32","shape":[{m},{k}]}},{{"name":"w","dtype":"f32","shape":[{n},{k}]}}{b_in}],
        "outputs": [{{"name":"y","dtype":"f32","shape":[{m},{n}]}}],
        "nodes": [{{"name":"fc","op":"npu_linear","inputs":["x","w"{b_use}],"outputs":["y"],"attrs":{attrs}}}]
      }}]
    }}"#
    );
    let file = ModelFile::parse(&text, "t.graph").expect("test graph parses");
    Graph::build(&file.graphs[0], &file.weights, &registry()).expect("test graph builds")
}

/// A one-node graph whose w [n, k] and b [n] are weights (input x [m, k], output y
/// [m, n]), with weights of test data (seeds `seed + 1`, `seed + 2`).
pub fn weighted_linear(m: usize, k: usize, n: usize, seed: u32) -> (Graph, WeightStore) {
    let text = format!(
        r#"{{
      "format": "amanuensis-graph", "version": 1,
      "model": {{"name": "t", "family": "t", "hyper_parameters": {{}}}},
      "weights": [{{"name":"w","dtype":"f32","shape":[{n},{k}]}},{{"name":"b","dtype":"f32","shape":[{n}]}}],
      "graphs": [{{
        "name": "main",
        "inputs": [{{"name":"x","dtype":"f32","shape":[{m},{k}]}}],
        "outputs": [{{"name":"y","dtype":"f32","shape":[{m},{n}]}}],
        "nodes": [{{"name":"fc","op":"npu_linear","inputs":["x","w","b"],"outputs":["y"],"attrs":{{}}}}]
      }}]
    }}"#
    );
    let file = ModelFile::parse(&text, "t.graph").expect("test graph parses");
    let g = Graph::build(&file.graphs[0], &file.weights, &registry()).expect("test graph builds");
    let weights = WeightStore::from_tensors([
        (
            "w".to_string(),
            Tensor::from_f32(&[n, k], tricky_data(n * k, seed + 1)).unwrap(),
        ),
        (
            "b".to_string(),
            Tensor::from_f32(&[n], tricky_data(n, seed + 2)).unwrap(),
        ),
    ]);
    (g, weights)
}

/// Instruction words of a fake stream (a 4-word header then ops; contents are opaque here).
pub fn fake_instructions(n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| 0x0600_0000 ^ i.wrapping_mul(0x9E37_79B9))
        .collect()
}

/// A fixture directory with kernels.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).expect("write fixture");
        p
    }

    pub fn xclbin(&self, name: &str, kernels: &[(&str, u32)]) -> PathBuf {
        self.write(name, &fake_xclbin(kernels))
    }

    pub fn insts(&self, name: &str, words: &[u32]) -> PathBuf {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.write(name, &bytes)
    }

    pub fn manifest(&self, entries: &[String]) -> PathBuf {
        let text = format!(
            r#"{{"format": "amanuensis-npu-kernels", "version": 1, "target": "npu1", "kernels": [{}]}}"#,
            entries.join(",")
        );
        self.write("manifest.json", text.as_bytes())
    }
}

/// A manifest entry for matmul_bias at (m, k, n) with bias: bf16 A and W, f32 bias and C.
pub fn matmul_entry(
    m: usize,
    k: usize,
    n: usize,
    xclbin: &str,
    insts: &str,
    extra: &str,
) -> String {
    format!(
        r#"{{"kernel": "matmul_bias", "inputs": [[{m},{k}],[{n},{k}],[{n}]], "xclbin": "{xclbin}", "insts": "{insts}"{extra},
            "args": [{{"input":0,"dtype":"bf16"}},{{"input":1,"dtype":"bf16"}},{{"input":2,"dtype":"f32"}},{{"output":0,"dtype":"f32"}}]}}"#
    )
}

fn bf16s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2)
        .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
        .collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// What the device would do for matmul_bias: read bf16 A, W and f32 bias from the device
/// buffers, run the catalogue reference, write f32 C. Also checks the control arguments.
pub fn matmul_hook(m: usize, k: usize, n: usize, expect_words: Vec<u32>) -> RunHook {
    Box::new(move |v: &mut RunView<'_>| {
        if v.opcode != 3 {
            return Err(format!("opcode {} (expected 3)", v.opcode));
        }
        if v.instructions != expect_words.as_slice() {
            return Err("instruction words differ from insts.bin".into());
        }
        if v.buffers.len() != 4 {
            return Err(format!("{} data buffers (expected 4)", v.buffers.len()));
        }
        let a = bf16s(v.buffers[0]);
        let w = bf16s(v.buffers[1]);
        let bias = f32s(v.buffers[2]);
        if a.len() != m * k
            || w.len() != n * k
            || bias.len() != n
            || v.buffers[3].len() != m * n * 4
        {
            return Err("buffer sizes do not match the variant".into());
        }
        let mut out = vec![0.0f32; m * n];
        matmul_bias(&a, m, k, &w, n, Some(&bias), &mut out).map_err(|e| e.to_string())?;
        for (d, x) in v.buffers[3].chunks_exact_mut(4).zip(&out) {
            d.copy_from_slice(&x.to_le_bytes());
        }
        Ok(())
    })
}

/// Deterministic test data with bf16 ties, NaN, infinities, signed zeros and subnormals.
pub fn tricky_data(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    (0..len)
        .map(|i| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let r = (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
            match i % 97 {
                3 => 1.0 + 1.0 / 256.0, // a tie: rounds to even (1.0)
                5 => 1.0 + 3.0 / 256.0, // a tie: rounds to even (up)
                7 => -0.0,
                11 => f32::from_bits(1), // smallest subnormal
                13 => 3.0e38,            // rounds to +inf in bf16
                _ => r,
            }
        })
        .collect()
}

/// Reads the words of an instruction file.
pub fn read_words(p: &Path) -> Vec<u32> {
    std::fs::read(p)
        .expect("read")
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
