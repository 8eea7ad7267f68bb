//! Builds the Whisper graph file from hyper-parameters: the `features`, `encoder`,
//! `cross_kv` and `decoder_step` graphs, and the weights they reference (OpenAI state-dict
//! names).
//! `graphs/whisper-base.graph` is this builder's output, checked by a golden test.

use super::config::WhisperDims;
use amanuensis_runtime::format::{
    Dim, GraphDef, ModelFile, ModelInfo, NodeDef, ValueDecl, WeightDecl, FORMAT_TAG, FORMAT_VERSION,
};
use amanuensis_runtime::DType;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Audio front-end constants shared by every Whisper size.
pub const SAMPLE_RATE: usize = 16_000;
/// STFT window length in samples.
pub const N_FFT: usize = 400;
/// STFT hop in samples (10 ms).
pub const HOP_LENGTH: usize = 160;
/// Mel frames in one 30-s window.
pub const N_FRAMES: usize = 3000;
/// Seconds of audio in one window.
pub const CHUNK_SECONDS: usize = 30;
/// Layer-norm epsilon (CTranslate2's default for Whisper; see docs/weights.md).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Graph names.
pub const FEATURES: &str = "features";
pub const ENCODER: &str = "encoder";
pub const CROSS_KV: &str = "cross_kv";
/// The encoder and cross K/V graphs joined into one (built at load on a device, so the
/// encoder output stays in device memory between them).
pub const WINDOW: &str = "encoder+cross_kv";
pub const DECODER_STEP: &str = "decoder_step";
pub const DECODER_ALIGN: &str = "decoder_align";
/// `decoder_step` over several windows at once (built at load, see [`windows_decoder_graph`]).
pub const DECODER_WINDOWS: &str = "decoder_step+windows";
/// Rows up to which [`DECODER_WINDOWS`]'s linear layers stream their weights.
pub const WINDOWS_GEMV_MAX_ROWS: usize = 512;
/// The symbolic dim of [`DECODER_WINDOWS`]'s cross K/V inputs and of
/// [`ENCODER_WINDOWS`]'s input and outputs: windows encoded or decoded together.
pub const WINDOWS_DIM: &str = "windows";
/// [`WINDOW`] over several windows at once, returning their cross K/V stacked as
/// [`DECODER_WINDOWS`] reads them (built at load, see [`windows_encoder_graph`]).
pub const ENCODER_WINDOWS: &str = "encoder+cross_kv+windows";

struct Builder {
    weights: Vec<WeightDecl>,
    seen: std::collections::HashSet<String>,
}

struct G {
    nodes: Vec<NodeDef>,
}

impl G {
    fn node(&mut self, name: &str, op: &str, inputs: &[&str], attrs: Value) -> String {
        self.node_n(name, op, inputs, &[], attrs)
    }

    fn node_n(
        &mut self,
        name: &str,
        op: &str,
        inputs: &[&str],
        states: &[&str],
        attrs: Value,
    ) -> String {
        let attrs: BTreeMap<String, Value> = match attrs {
            Value::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        self.nodes.push(NodeDef {
            name: name.to_string(),
            op: op.to_string(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![name.to_string()],
            states: states.iter().map(|s| s.to_string()).collect(),
            attrs,
        });
        name.to_string()
    }
}

impl Builder {
    fn w(&mut self, name: &str, shape: &[usize]) -> String {
        if self.seen.insert(name.to_string()) {
            self.weights.push(WeightDecl {
                name: name.to_string(),
                dtype: DType::F16,
                shape: shape.to_vec(),
            });
        }
        name.to_string()
    }

    fn layer_norm(&mut self, g: &mut G, name: &str, x: &str, prefix: &str, d: usize) -> String {
        let gamma = self.w(&format!("{prefix}.weight"), &[d]);
        let beta = self.w(&format!("{prefix}.bias"), &[d]);
        g.node(
            name,
            "layer_norm",
            &[x, &gamma, &beta],
            json!({ "eps": LAYER_NORM_EPS }),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        g: &mut G,
        name: &str,
        x: &str,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> String {
        let w = self.w(&format!("{prefix}.weight"), &[out, inp]);
        if bias {
            let b = self.w(&format!("{prefix}.bias"), &[out]);
            g.node(name, "linear", &[x, &w, &b], json!({}))
        } else {
            g.node(name, "linear", &[x, &w], json!({}))
        }
    }

    fn mlp(&mut self, g: &mut G, p: &str, x: &str, wp: &str, d: usize) -> String {
        let h = self.layer_norm(g, &format!("{p}.mlp_ln"), x, &format!("{wp}.mlp_ln"), d);
        let f1 = self.linear(
            g,
            &format!("{p}.fc1"),
            &h,
            &format!("{wp}.mlp.0"),
            4 * d,
            d,
            true,
        );
        let a = g.node(&format!("{p}.gelu"), "gelu", &[&f1], json!({}));
        let f2 = self.linear(
            g,
            &format!("{p}.fc2"),
            &a,
            &format!("{wp}.mlp.2"),
            d,
            4 * d,
            true,
        );
        g.node(&format!("{p}.mlp_res"), "add", &[x, &f2], json!({}))
    }
}

fn decl(name: &str, dtype: DType, shape: Vec<Dim>) -> ValueDecl {
    ValueDecl {
        name: name.to_string(),
        dtype,
        shape,
    }
}

/// The graph file for a Whisper model with these hyper-parameters.
pub fn build_whisper_graph(name: &str, dims: &WhisperDims) -> ModelFile {
    let mut b = Builder {
        weights: Vec::new(),
        seen: Default::default(),
    };
    let graphs = vec![
        features(dims),
        encoder(&mut b, dims),
        cross_kv(&mut b, dims),
        decoder_step(&mut b, dims),
        decoder_align(&mut b, dims),
    ];
    let mut hp = BTreeMap::new();
    for (k, v) in serde_json::to_value(dims)
        .expect("dims serialise")
        .as_object()
        .expect("object")
    {
        hp.insert(k.clone(), v.clone());
    }
    hp.insert("sample_rate".into(), json!(SAMPLE_RATE));
    hp.insert("n_fft".into(), json!(N_FFT));
    hp.insert("hop_length".into(), json!(HOP_LENGTH));
    hp.insert("n_frames".into(), json!(N_FRAMES));
    hp.insert("chunk_seconds".into(), json!(CHUNK_SECONDS));
    ModelFile {
        format: FORMAT_TAG.to_string(),
        version: FORMAT_VERSION,
        model: ModelInfo {
            name: name.to_string(),
            family: "whisper".into(),
            hyper_parameters: hp,
        },
        weights: b.weights,
        graphs,
    }
}

/// The log-mel front end over a whole recording. It is its own graph because the
/// normalisation uses the maximum over the whole recording (as faster-whisper does), so
/// it runs once per file; the encoder then reads 30-s windows of its output.
fn features(d: &WhisperDims) -> GraphDef {
    let mut g = G { nodes: Vec::new() };
    g.node(
        "log_mel",
        "log_mel",
        &["pcm"],
        json!({ "sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "n_mels": d.n_mels }),
    );
    g.nodes[0].outputs = vec!["mel".into()];
    GraphDef {
        name: FEATURES.into(),
        inputs: vec![decl("pcm", DType::F32, vec![Dim::Sym("n_samples".into())])],
        outputs: vec![decl(
            "mel",
            DType::F32,
            vec![d.n_mels.into(), Dim::Sym("mel_frames".into())],
        )],
        states: vec![],
        nodes: g.nodes,
    }
}

fn encoder(b: &mut Builder, d: &WhisperDims) -> GraphDef {
    let mut g = G { nodes: Vec::new() };
    let s = d.n_audio_state;
    let mel = "mel".to_string();
    let w1 = b.w("encoder.conv1.weight", &[s, d.n_mels, 3]);
    let b1 = b.w("encoder.conv1.bias", &[s]);
    let c1 = g.node(
        "conv1",
        "conv1d",
        &[&mel, &w1, &b1],
        json!({ "stride": 1, "padding": 1 }),
    );
    let a1 = g.node("conv1.gelu", "gelu", &[&c1], json!({}));
    let w2 = b.w("encoder.conv2.weight", &[s, s, 3]);
    let b2 = b.w("encoder.conv2.bias", &[s]);
    let c2 = g.node(
        "conv2",
        "conv1d",
        &[&a1, &w2, &b2],
        json!({ "stride": 2, "padding": 1 }),
    );
    let a2 = g.node("conv2.gelu", "gelu", &[&c2], json!({}));
    let t = g.node("to_time_major", "transpose", &[&a2], json!({}));
    let pos = b.w("encoder.positional_embedding", &[d.n_audio_ctx, s]);
    let mut x = g.node("add_positions", "add", &[&t, &pos], json!({}));
    for i in 0..d.n_audio_layer {
        let p = format!("block{i}");
        let wp = format!("encoder.blocks.{i}");
        let h = b.layer_norm(
            &mut g,
            &format!("{p}.attn_ln"),
            &x,
            &format!("{wp}.attn_ln"),
            s,
        );
        let q = b.linear(
            &mut g,
            &format!("{p}.q"),
            &h,
            &format!("{wp}.attn.query"),
            s,
            s,
            true,
        );
        let k = b.linear(
            &mut g,
            &format!("{p}.k"),
            &h,
            &format!("{wp}.attn.key"),
            s,
            s,
            false,
        );
        let v = b.linear(
            &mut g,
            &format!("{p}.v"),
            &h,
            &format!("{wp}.attn.value"),
            s,
            s,
            true,
        );
        let o = g.node(
            &format!("{p}.attn"),
            "attention",
            &[&q, &k, &v],
            json!({ "heads": d.n_audio_head }),
        );
        let proj = b.linear(
            &mut g,
            &format!("{p}.attn_out"),
            &o,
            &format!("{wp}.attn.out"),
            s,
            s,
            true,
        );
        x = g.node(&format!("{p}.attn_res"), "add", &[&x, &proj], json!({}));
        x = b.mlp(&mut g, &p, &x, &wp, s);
    }
    let out = b.layer_norm(&mut g, "ln_post", &x, "encoder.ln_post", s);
    // The graph output carries a stable name whatever the last node is called.
    g.nodes.last_mut().expect("ln_post").outputs = vec!["encoder_out".into()];
    let _ = out;
    GraphDef {
        name: ENCODER.into(),
        // 2 mel frames per audio position (N_FRAMES for the published sizes); a shorter
        // audio context plans the encoder at that length.
        inputs: vec![decl(
            "mel",
            DType::F32,
            vec![d.n_mels.into(), (2 * d.n_audio_ctx).into()],
        )],
        outputs: vec![decl(
            "encoder_out",
            DType::F32,
            vec![d.n_audio_ctx.into(), s.into()],
        )],
        states: vec![],
        nodes: g.nodes,
    }
}

fn cross_kv(b: &mut Builder, d: &WhisperDims) -> GraphDef {
    let mut g = G { nodes: Vec::new() };
    let (s, a) = (d.n_text_state, d.n_audio_state);
    let mut outputs = Vec::new();
    for i in 0..d.n_text_layer {
        let wp = format!("decoder.blocks.{i}.cross_attn");
        let k = b.linear(
            &mut g,
            &format!("cross_k.{i}"),
            "encoder_out",
            &format!("{wp}.key"),
            s,
            a,
            false,
        );
        let v = b.linear(
            &mut g,
            &format!("cross_v.{i}"),
            "encoder_out",
            &format!("{wp}.value"),
            s,
            a,
            true,
        );
        outputs.push(decl(&k, DType::F32, vec![d.n_audio_ctx.into(), s.into()]));
        outputs.push(decl(&v, DType::F32, vec![d.n_audio_ctx.into(), s.into()]));
    }
    GraphDef {
        name: CROSS_KV.into(),
        inputs: vec![decl(
            "encoder_out",
            DType::F32,
            vec![d.n_audio_ctx.into(), a.into()],
        )],
        outputs,
        states: vec![],
        nodes: g.nodes,
    }
}

/// How the decoder graph attends to earlier tokens.
#[derive(Clone, Copy, PartialEq)]
enum DecoderMode {
    /// Incremental: new tokens' keys and values go into the KV-cache states.
    Step,
    /// Teacher-forced over a whole sequence, exposing the cross-attention probabilities.
    Align,
}

/// The decoder blocks shared by `decoder_step` and `decoder_align`; returns the value
/// after the last block.
fn decoder_blocks(
    b: &mut Builder,
    g: &mut G,
    d: &WhisperDims,
    mut x: String,
    mode: DecoderMode,
) -> String {
    let s = d.n_text_state;
    for i in 0..d.n_text_layer {
        let p = format!("block{i}");
        let wp = format!("decoder.blocks.{i}");
        let h = b.layer_norm(g, &format!("{p}.attn_ln"), &x, &format!("{wp}.attn_ln"), s);
        let q = b.linear(
            g,
            &format!("{p}.q"),
            &h,
            &format!("{wp}.attn.query"),
            s,
            s,
            true,
        );
        let k = b.linear(
            g,
            &format!("{p}.k"),
            &h,
            &format!("{wp}.attn.key"),
            s,
            s,
            false,
        );
        let v = b.linear(
            g,
            &format!("{p}.v"),
            &h,
            &format!("{wp}.attn.value"),
            s,
            s,
            true,
        );
        let o = match mode {
            DecoderMode::Step => {
                let (sk, sv) = (format!("self_k.{i}"), format!("self_v.{i}"));
                g.node_n(
                    &format!("{p}.self_attn"),
                    "kv_cache_attention",
                    &[&q, &k, &v, "offset"],
                    &[&sk, &sv],
                    json!({ "heads": d.n_text_head }),
                )
            }
            DecoderMode::Align => g.node(
                &format!("{p}.self_attn"),
                "attention",
                &[&q, &k, &v],
                json!({ "heads": d.n_text_head, "causal": true }),
            ),
        };
        let proj = b.linear(
            g,
            &format!("{p}.attn_out"),
            &o,
            &format!("{wp}.attn.out"),
            s,
            s,
            true,
        );
        x = g.node(&format!("{p}.attn_res"), "add", &[&x, &proj], json!({}));
        let h = b.layer_norm(
            g,
            &format!("{p}.cross_ln"),
            &x,
            &format!("{wp}.cross_attn_ln"),
            s,
        );
        let cq = b.linear(
            g,
            &format!("{p}.cross_q"),
            &h,
            &format!("{wp}.cross_attn.query"),
            s,
            s,
            true,
        );
        let (ck, cv) = (format!("cross_k.{i}"), format!("cross_v.{i}"));
        let co = match mode {
            DecoderMode::Step => g.node(
                &format!("{p}.cross_attn"),
                "attention",
                &[&cq, &ck, &cv],
                json!({ "heads": d.n_text_head }),
            ),
            DecoderMode::Align => {
                let name = format!("{p}.cross_attn");
                g.node(
                    &name,
                    "attention",
                    &[&cq, &ck, &cv],
                    json!({ "heads": d.n_text_head, "return_weights": true }),
                );
                g.nodes
                    .last_mut()
                    .expect("just added")
                    .outputs
                    .push(format!("cross_weights.{i}"));
                name
            }
        };
        let proj = b.linear(
            g,
            &format!("{p}.cross_out"),
            &co,
            &format!("{wp}.cross_attn.out"),
            s,
            s,
            true,
        );
        x = g.node(&format!("{p}.cross_res"), "add", &[&x, &proj], json!({}));
        x = b.mlp(g, &p, &x, &wp, s);
    }
    x
}

fn decoder_inputs(d: &WhisperDims, inputs: &mut Vec<ValueDecl>) {
    for i in 0..d.n_text_layer {
        inputs.push(decl(
            &format!("cross_k.{i}"),
            DType::F32,
            vec![d.n_audio_ctx.into(), d.n_text_state.into()],
        ));
        inputs.push(decl(
            &format!("cross_v.{i}"),
            DType::F32,
            vec![d.n_audio_ctx.into(), d.n_text_state.into()],
        ));
    }
}

/// The embeddings of `tokens` at positions `offset..`.
fn decoder_embed(b: &mut Builder, g: &mut G, d: &WhisperDims) -> (String, String) {
    let s = d.n_text_state;
    let emb = b.w("decoder.token_embedding.weight", &[d.n_vocab, s]);
    let pos = b.w("decoder.positional_embedding", &[d.n_text_ctx, s]);
    let te = g.node("token_embedding", "embedding", &["tokens", &emb], json!({}));
    let pe = g.node(
        "position_embedding",
        "position_embedding",
        &["tokens", "offset", &pos],
        json!({}),
    );
    (g.node("add_positions", "add", &[&te, &pe], json!({})), emb)
}

fn decoder_step(b: &mut Builder, d: &WhisperDims) -> GraphDef {
    let mut g = G { nodes: Vec::new() };
    let s = d.n_text_state;
    let batch = || Dim::Sym("batch".into());
    let n_tokens = || Dim::Sym("n_tokens".into());
    let mut inputs = vec![
        decl("tokens", DType::I32, vec![batch(), n_tokens()]),
        decl("offset", DType::I32, vec![]),
        decl("logit_index", DType::I32, vec![Dim::Sym("n_logits".into())]),
    ];
    decoder_inputs(d, &mut inputs);
    let mut states = Vec::new();
    for i in 0..d.n_text_layer {
        states.push(decl(
            &format!("self_k.{i}"),
            DType::F32,
            vec![batch(), d.n_text_ctx.into(), s.into()],
        ));
        states.push(decl(
            &format!("self_v.{i}"),
            DType::F32,
            vec![batch(), d.n_text_ctx.into(), s.into()],
        ));
    }
    let (x, emb) = decoder_embed(b, &mut g, d);
    let x = decoder_blocks(b, &mut g, d, x, DecoderMode::Step);
    // Only the requested positions go through the final norm and the vocabulary projection.
    let sel = g.node(
        "select_positions",
        "take",
        &[&x, "logit_index"],
        json!({ "axis": 1 }),
    );
    let h = b.layer_norm(&mut g, "ln", &sel, "decoder.ln", s);
    g.node("logits", "linear", &[&h, &emb], json!({}));
    GraphDef {
        name: DECODER_STEP.into(),
        inputs,
        outputs: vec![decl(
            "logits",
            DType::F32,
            vec![batch(), Dim::Sym("n_logits".into()), d.n_vocab.into()],
        )],
        states,
        nodes: g.nodes,
    }
}

/// A teacher-forced decoder pass over a whole token sequence that also returns every
/// layer's cross-attention probabilities: the input of word-level alignment.
fn decoder_align(b: &mut Builder, d: &WhisperDims) -> GraphDef {
    let mut g = G { nodes: Vec::new() };
    let s = d.n_text_state;
    let n = || Dim::Sym("n_tokens".into());
    let mut inputs = vec![
        decl("tokens", DType::I32, vec![Dim::Known(1), n()]),
        decl("offset", DType::I32, vec![]),
    ];
    decoder_inputs(d, &mut inputs);
    let (x, emb) = decoder_embed(b, &mut g, d);
    let x = decoder_blocks(b, &mut g, d, x, DecoderMode::Align);
    let h = b.layer_norm(&mut g, "ln", &x, "decoder.ln", s);
    g.node("logits", "linear", &[&h, &emb], json!({}));
    let mut outputs = vec![decl(
        "logits",
        DType::F32,
        vec![Dim::Known(1), n(), d.n_vocab.into()],
    )];
    for i in 0..d.n_text_layer {
        outputs.push(decl(
            &format!("cross_weights.{i}"),
            DType::F32,
            vec![
                Dim::Known(1),
                d.n_text_head.into(),
                n(),
                d.n_audio_ctx.into(),
            ],
        ));
    }
    GraphDef {
        name: DECODER_ALIGN.into(),
        inputs,
        outputs,
        states: vec![],
        nodes: g.nodes,
    }
}

/// Sets `bf16_products` on the [`ENCODER`] graph's nodes (the int8 compute type on a CPU
/// that multiplies bf16 in hardware): every `attention` node, and every `linear` node
/// whose weight is an encoder block's (`encoder.blocks.N.…`); with `first_block` false,
/// only those after the first block (an attention node another attention node feeds, a
/// weight with N > 0). A linear whose weight has
/// an int8 form runs int8 anyway, so this moves the last (and first) block's linears
/// (kept out of int8, see [`crate::compute::linear_weights`]) and the attention products,
/// the largest f32 work left, to bf16.
///
/// `first_block` is for AMX tiles on request (`AMANUENSIS_BF16_TILES=1`; not the default,
/// `docs/kernels.md`). Otherwise the first block stays f32 (it reads the convolutions'
/// features directly): with its attention in bf16 too,
/// `long_public_concat.wav` had 10 word errors of 165 at beam 5 against f32's 9, and with
/// every block's linears in bf16, the public clips 23 of 292 against 22. Derived graphs
/// ([`window_graph`], [`windows_encoder_graph`]) inherit it from the graph edited here.
/// Returns how many nodes it marked.
pub fn bf16_encoder(
    file: &mut amanuensis_runtime::ModelFile,
    first_block: bool,
) -> Result<usize, String> {
    let enc = graph_mut(file, ENCODER)?;
    // Nodes may be listed in any order: an attention node is a later block's when another
    // attention node lies upstream of it.
    let producer: BTreeMap<&str, usize> = enc
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let after_another = |start: usize| {
        let mut seen = vec![false; enc.nodes.len()];
        let mut stack: Vec<usize> = vec![start];
        while let Some(i) = stack.pop() {
            for v in &enc.nodes[i].inputs {
                if let Some(&p) = producer.get(v.as_str()) {
                    if !seen[p] {
                        if enc.nodes[p].op == "attention" {
                            return true;
                        }
                        seen[p] = true;
                        stack.push(p);
                    }
                }
            }
        }
        false
    };
    let later_block_weight = |n: &NodeDef| {
        let block = n.inputs.get(1).and_then(|w| {
            w.strip_prefix("encoder.blocks.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        });
        matches!(block, Some(b) if b > 0 || first_block)
    };
    let later: Vec<usize> = (0..enc.nodes.len())
        .filter(|&i| match enc.nodes[i].op.as_str() {
            "attention" => first_block || after_another(i),
            "linear" => later_block_weight(&enc.nodes[i]),
            _ => false,
        })
        .collect();
    let edited = later.len();
    for i in later {
        enc.nodes[i]
            .attrs
            .insert("bf16_products".into(), json!(true));
    }
    Ok(edited)
}

/// Sets `bf16x3` on every `attention` node of the [`ENCODER`] graph, and on every `linear`
/// whose weight is an encoder block's (those with an int8 form run int8 anyway, so this
/// moves the first and last blocks'), the first block's included: their products of many
/// rows then run as bf16x3 on AMX tiles (each operand two bf16 values; results about 2⁻¹⁵
/// relative from exact, where one bf16 product leaves 2⁻⁸), faster there than f32 and
/// than one bf16 product on AVX-512. For the int8 compute type on a CPU with AMX-BF16, on
/// request (`AMANUENSIS_BF16X3=1`; `docs/kernels.md`, "bf16x3 products"). Returns how
/// many nodes it marked.
pub fn bf16x3_encoder(file: &mut amanuensis_runtime::ModelFile) -> usize {
    let mut marked = 0;
    for g in file.graphs.iter_mut().filter(|g| g.name == ENCODER) {
        for node in &mut g.nodes {
            let block_weight = node.op == "linear"
                && node
                    .inputs
                    .get(1)
                    .is_some_and(|w| w.starts_with("encoder.blocks."));
            if node.op == "attention" || block_weight {
                node.attrs.insert("bf16x3".into(), json!(true));
                marked += 1;
            }
        }
    }
    marked
}

/// Sets `f32_math` on every `gelu` node of the [`ENCODER`] graph: GELU evaluated in f32
/// (relative error below 2e-6 instead of 1.5e-7), for the bf16 compute type, whose next
/// products round thousands of times more. It takes about 45 ms of a window in f64, 2.4
/// times that of f32. Not used at int8: there it moved one word on the long recording and
/// one on the clips at beam 5 (10/165 and 23/292 against 9 and 22), which is over the
/// +0.3-point bar. Returns how many nodes it marked.
pub fn f32_encoder_gelu(file: &mut amanuensis_runtime::ModelFile) -> usize {
    let mut marked = 0;
    for g in file.graphs.iter_mut().filter(|g| g.name == ENCODER) {
        for node in g.nodes.iter_mut().filter(|n| n.op == "gelu") {
            node.attrs.insert("f32_math".into(), json!(true));
            marked += 1;
        }
    }
    marked
}

/// The `bf16` compute type: sets `bf16_products` on every `linear` node of every graph and
/// on every `attention` node of the [`ENCODER`] graph. The ops apply it to products of
/// many rows only (the decoder's steps stay f32). Returns how many nodes it marked.
pub fn bf16_products(file: &mut amanuensis_runtime::ModelFile) -> usize {
    let mut marked = 0;
    for g in &mut file.graphs {
        let encoder = g.name == ENCODER;
        for node in &mut g.nodes {
            if node.op == "linear" || (encoder && node.op == "attention") {
                node.attrs.insert("bf16_products".into(), json!(true));
                marked += 1;
            }
        }
    }
    marked
}

/// Whether `name` is one of the decoder's cross-attention key or value tensors.
fn is_cross_kv(name: &str) -> bool {
    name.starts_with("cross_k.") || name.starts_with("cross_v.")
}

/// The graph of `file` named `name`.
fn graph_mut<'a>(
    file: &'a mut amanuensis_runtime::ModelFile,
    name: &str,
) -> Result<&'a mut GraphDef, String> {
    file.graphs
        .iter_mut()
        .find(|g| g.name == name)
        .ok_or_else(|| format!("the graph file has no graph '{name}'"))
}

/// Keeps the decoder's cross-attention keys and values in f16 (the int8 and bf16 compute
/// types): sets `f16_output` on the [`CROSS_KV`] nodes that produce its `cross_k.*` and
/// `cross_v.*` outputs, and declares those outputs, and the inputs of that name of every
/// other graph, f16. Every decoder step reads all of them (6 × 2 × 1500 × 512 values for
/// whisper-base, 37 MB in f32, more than this class of CPU's last-level cache), so halving
/// them takes bytes off each step; the `attention` op reads them in f16 directly, widening
/// each value exactly as it loads it. Derived graphs inherit it. Returns how many cross
/// K/V values it changed; errors when the [`CROSS_KV`] graph has none or a node other
/// than a linear produces one.
pub fn f16_cross_kv(file: &mut amanuensis_runtime::ModelFile) -> Result<usize, String> {
    let is_cross = is_cross_kv;
    let cross = graph_mut(file, CROSS_KV)?;
    let mut changed = 0;
    for out in cross.outputs.iter_mut().filter(|o| is_cross(&o.name)) {
        let node = cross
            .nodes
            .iter_mut()
            .find(|n| n.outputs.contains(&out.name))
            .ok_or_else(|| format!("no node of '{CROSS_KV}' produces '{}'", out.name))?;
        if node.op != "linear" || node.outputs.len() != 1 {
            return Err(format!(
                "'{}' comes from a '{}' node, not a linear",
                out.name, node.op
            ));
        }
        node.attrs.insert("f16_output".into(), json!(true));
        out.dtype = DType::F16;
        changed += 1;
    }
    if changed == 0 {
        return Err(format!("graph '{CROSS_KV}' has no cross K/V outputs"));
    }
    for g in file.graphs.iter_mut().filter(|g| g.name != CROSS_KV) {
        for input in g.inputs.iter_mut().filter(|i| is_cross(&i.name)) {
            input.dtype = DType::F16;
        }
    }
    Ok(changed)
}

/// Stores the decoder's cross-attention keys and values with each head's keys contiguous
/// (the int8 and bf16 compute types, after [`f16_cross_kv`]): each `cross_k.*` /
/// `cross_v.*` output of the [`CROSS_KV`] graph goes through a `split_heads` node, so it
/// becomes `[heads, n_audio_ctx, s / heads]`; every other graph declares its inputs of
/// that name so, and its `attention` nodes reading them get `kv_heads_major`. A decoder
/// step reads all of them from memory, and a head's slice of a row is 128 bytes of every
/// kilobyte: stored by head, each head's keys are one run the hardware prefetchers follow
/// (`kernel_bench 2 "cross-attention step"`: 3.1–3.8 against 1.5–2.0 ms for a beam-5
/// step's six layers, `docs/kernels.md`). Each attention row's arithmetic is unchanged,
/// so a transcript's bits are too. Derived graphs inherit it. Returns how many cross K/V
/// values it changed; errors when the [`CROSS_KV`] graph has none, a value is not
/// `[n_audio_ctx, s]` with `s` divisible by `heads`, or an attention node reads only one
/// of a pair.
pub fn heads_major_cross_kv(
    file: &mut amanuensis_runtime::ModelFile,
    heads: usize,
) -> Result<usize, String> {
    let is_cross = is_cross_kv;
    let by_head = |shape: &[Dim], what: &str| -> Result<Vec<Dim>, String> {
        match shape {
            [t, Dim::Known(s)] if heads > 0 && s % heads == 0 => {
                Ok(vec![Dim::Known(heads), t.clone(), Dim::Known(s / heads)])
            }
            _ => Err(format!(
                "'{what}' is {shape:?}, not [n_audio_ctx, s] with s divisible by {heads} heads"
            )),
        }
    };
    let cross = graph_mut(file, CROSS_KV)?;
    let mut changed = 0;
    let mut split = Vec::new();
    for out in cross.outputs.iter_mut().filter(|o| is_cross(&o.name)) {
        out.shape = by_head(&out.shape, &out.name)?;
        let rows = format!("{}.rows", out.name);
        let node = cross
            .nodes
            .iter_mut()
            .find(|n| n.outputs.contains(&out.name))
            .ok_or_else(|| format!("no node of '{CROSS_KV}' produces '{}'", out.name))?;
        for o in node.outputs.iter_mut().filter(|o| **o == out.name) {
            o.clone_from(&rows);
        }
        split.push(NodeDef {
            name: format!("{}.split_heads", out.name),
            op: "split_heads".into(),
            inputs: vec![rows],
            outputs: vec![out.name.clone()],
            states: Vec::new(),
            attrs: [("heads".to_string(), json!(heads))].into_iter().collect(),
        });
        changed += 1;
    }
    if changed == 0 {
        return Err(format!("graph '{CROSS_KV}' has no cross K/V outputs"));
    }
    cross.nodes.extend(split);
    for g in file.graphs.iter_mut().filter(|g| g.name != CROSS_KV) {
        for input in g.inputs.iter_mut().filter(|i| is_cross(&i.name)) {
            input.shape = by_head(&input.shape, &input.name)?;
        }
        for node in g.nodes.iter_mut().filter(|n| n.op == "attention") {
            let reads = |i: usize| node.inputs.get(i).is_some_and(|n| is_cross(n));
            match (reads(1), reads(2)) {
                (true, true) => {
                    node.attrs.insert("kv_heads_major".into(), json!(true));
                }
                (false, false) => {}
                _ => {
                    return Err(format!(
                        "attention node '{}' of graph '{}' reads one cross K/V value with \
                         another kind of value",
                        node.name, g.name
                    ))
                }
            }
        }
    }
    Ok(changed)
}

/// Stores the decoder's self-attention KV caches by head: every `kv_cache_attention` node
/// gets `heads_major`, and its two states become `[batch, heads, n_text_ctx, s / heads]`.
/// A step then reads each head's filled positions as one contiguous run (`kernel_bench 2
/// "self-attention step"`, `docs/kernels.md`); each output is computed as before, bit for
/// bit. Applied at load for the CPU, at every compute type; derived graphs inherit it.
/// Returns how many nodes it changed; errors when a state is not `[batch, n, s]` with `s`
/// divisible by the node's heads.
pub fn heads_major_self_kv(file: &mut amanuensis_runtime::ModelFile) -> Result<usize, String> {
    let mut changed = 0;
    for g in &mut file.graphs {
        for node in g.nodes.iter_mut().filter(|n| n.op == "kv_cache_attention") {
            let heads = node
                .attrs
                .get("heads")
                .and_then(Value::as_u64)
                .filter(|&h| h > 0)
                .ok_or_else(|| format!("node '{}' has no usable 'heads'", node.name))?
                as usize;
            for state in &node.states {
                let decl = g
                    .states
                    .iter_mut()
                    .find(|d| d.name == *state)
                    .ok_or_else(|| format!("graph '{}' declares no state '{state}'", g.name))?;
                decl.shape = match decl.shape.as_slice() {
                    [b, t, Dim::Known(s)] if s % heads == 0 => vec![
                        b.clone(),
                        Dim::Known(heads),
                        t.clone(),
                        Dim::Known(s / heads),
                    ],
                    other => {
                        return Err(format!(
                            "state '{state}' is {other:?}, not [batch, n, s] with s divisible \
                             by {heads} heads"
                        ))
                    }
                };
            }
            node.attrs.insert("heads_major".into(), json!(true));
            changed += 1;
        }
    }
    Ok(changed)
}

/// The [`WINDOW`] graph: the encoder's nodes, then the cross K/V nodes reading the
/// encoder's output directly; outputs are the cross K/V tensors, then the encoder output
/// (a caller that does not want it leaves it on the device).
pub fn window_graph(
    file: &amanuensis_runtime::ModelFile,
) -> Result<amanuensis_runtime::format::GraphDef, String> {
    let get = |n: &str| {
        file.graphs
            .iter()
            .find(|g| g.name == n)
            .ok_or_else(|| format!("the graph file has no graph '{n}'"))
    };
    let (enc, cross) = (get(ENCODER)?, get(CROSS_KV)?);
    let [link] = cross.inputs.as_slice() else {
        return Err(format!(
            "graph '{CROSS_KV}' must take one input, the encoder output"
        ));
    };
    let [enc_out] = enc.outputs.as_slice() else {
        return Err(format!("graph '{ENCODER}' must have one output"));
    };
    if link.name != enc_out.name || link.dtype != enc_out.dtype || link.shape != enc_out.shape {
        return Err(format!(
            "graph '{CROSS_KV}' input '{}' does not match graph '{ENCODER}' output '{}'",
            link.name, enc_out.name
        ));
    }
    if !enc.states.is_empty() || !cross.states.is_empty() {
        return Err("the encoder and cross K/V graphs keep no state".into());
    }
    if let Some(n) = cross
        .nodes
        .iter()
        .find(|c| enc.nodes.iter().any(|e| e.name == c.name))
    {
        return Err(format!("node name '{}' is in both graphs", n.name));
    }
    let mut outputs = cross.outputs.clone();
    outputs.push(enc_out.clone());
    Ok(amanuensis_runtime::format::GraphDef {
        name: WINDOW.to_string(),
        inputs: enc.inputs.clone(),
        outputs,
        states: Vec::new(),
        nodes: enc.nodes.iter().chain(&cross.nodes).cloned().collect(),
    })
}

/// The [`ENCODER_WINDOWS`] graph: [`window_graph`] with a leading `windows` dim on its
/// input, `[windows, n_mels, frames]`, and on its outputs, the cross K/V of every decoder
/// layer as `[windows, n_audio_ctx, s]` (the encoder output stays inside). One run encodes
/// a batch of 30-s windows: each weight is read once per batch rather than once per
/// window, and the outputs feed [`DECODER_WINDOWS`] without restacking. Every op of the
/// encoder takes leading dims (conv1d a batch, transpose and attention each matrix of one,
/// the row-wise ops any), so the nodes are the stored graphs' own.
pub fn windows_encoder_graph(
    file: &amanuensis_runtime::ModelFile,
) -> Result<amanuensis_runtime::format::GraphDef, String> {
    let mut def = window_graph(file)?;
    def.name = ENCODER_WINDOWS.to_string();
    // The last output is the encoder's own; the cross K/V graph consumes it inside.
    def.outputs.pop();
    if def.outputs.is_empty() {
        return Err(format!("graph '{CROSS_KV}' has no outputs"));
    }
    for decl in def.inputs.iter_mut().chain(def.outputs.iter_mut()) {
        decl.shape.insert(0, Dim::Sym(WINDOWS_DIM.into()));
    }
    Ok(def)
}

/// The [`DECODER_WINDOWS`] graph: `decoder_step` whose cross K/V inputs carry a leading
/// `windows` dim, `[windows, n_audio_ctx, s]`, so that one step decodes several 30-s
/// windows in lockstep. The step's `batch` must be a multiple of `windows`: consecutive
/// groups of `batch / windows` sequences (a window's beams) read one window's K/V, which
/// the `attention` op does without copying them per beam. Built at load rather than
/// stored, so the graph file (and every device's plan of it) is unchanged. Without
/// `stream_rows`, each row gets the bits it gets decoded alone (the server's batches of
/// requests); with it, rows of int8 weights stream the stored weight (the batched
/// pipeline's windows, faster).
pub fn windows_decoder_graph(
    file: &amanuensis_runtime::ModelFile,
    stream_rows: bool,
) -> Result<amanuensis_runtime::format::GraphDef, String> {
    let step = file
        .graphs
        .iter()
        .find(|g| g.name == DECODER_STEP)
        .ok_or_else(|| format!("the graph file has no graph '{DECODER_STEP}'"))?;
    let mut def = step.clone();
    def.name = DECODER_WINDOWS.to_string();
    let mut crossed = 0;
    for input in &mut def.inputs {
        if is_cross_kv(&input.name) {
            // `[n_audio_ctx, s]`, or `[heads, n_audio_ctx, s / heads]` stored by head.
            if !(2..=3).contains(&input.shape.len()) {
                return Err(format!(
                    "graph '{DECODER_STEP}' input '{}' must be [n_audio_ctx, s] or \
                     [heads, n_audio_ctx, s / heads] to take a windows dim",
                    input.name
                ));
            }
            input.shape.insert(0, Dim::Sym(WINDOWS_DIM.into()));
            crossed += 1;
        }
    }
    if crossed == 0 {
        return Err(format!("graph '{DECODER_STEP}' has no cross K/V inputs"));
    }
    // A step's rows are windows × beams (up to a few dozen): streaming each weight once
    // for all of them beats packing it for gemm, which pays off only for long sequences.
    // With `stream_rows` they stream the stored weight even where it has an int8 form
    // (faster, but each row's bits then depend on how many rows share the step).
    for node in def.nodes.iter_mut().filter(|n| n.op == "linear") {
        node.attrs
            .insert("gemv_max_rows".into(), json!(WINDOWS_GEMV_MAX_ROWS));
        if stream_rows {
            node.attrs.insert("stream_rows".into(), json!(true));
        }
    }
    Ok(def)
}
