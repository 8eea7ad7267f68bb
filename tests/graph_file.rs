//! The graph file: the committed whisper-base graph is the builder's output, every
//! published size builds and validates, and each kind of malformed graph is rejected
//! with an error that names the graph, the node and the reason.

use amanuensis::whisper::config::WhisperDims;
use amanuensis::whisper::graph::build_whisper_graph;
use amanuensis_runtime::format::{ModelFile, NodeDef};
use amanuensis_runtime::{Graph, RuntimeError};
use std::path::Path;

fn base() -> ModelFile {
    build_whisper_graph("whisper-base", &WhisperDims::for_size("base").unwrap())
}

fn validate(file: &ModelFile) -> Result<Vec<Graph>, RuntimeError> {
    let reg = amanuensis_operators::standard_registry();
    file.graphs
        .iter()
        .map(|g| Graph::build(g, &file.weights, &reg))
        .collect()
}

#[test]
fn committed_graph_equals_builder_output() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/whisper-base.graph");
    let committed = std::fs::read_to_string(&path).unwrap();
    let built = base().to_text();
    assert!(
        committed == built,
        "graphs/whisper-base.graph is stale: regenerate with `cargo run --release -- graph build base -o graphs/whisper-base.graph`"
    );
    // And it parses back to the same structure.
    assert_eq!(ModelFile::parse(&committed, "committed").unwrap(), base());
}

#[test]
fn every_published_size_builds_and_validates() {
    for size in ["tiny", "base", "small", "medium", "large-v3"] {
        let dims = WhisperDims::for_size(size).unwrap();
        let file = build_whisper_graph(&format!("whisper-{size}"), &dims);
        let graphs = validate(&file).unwrap_or_else(|e| panic!("{size}: {e}"));
        let names: Vec<&str> = graphs.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "features",
                "encoder",
                "cross_kv",
                "decoder_step",
                "decoder_align"
            ]
        );
        let enc = &graphs[1];
        // 6 nodes of conv stem and positions + 12 per block + final norm.
        assert_eq!(enc.nodes.len(), 6 + 12 * dims.n_audio_layer + 1, "{size}");
        let round = ModelFile::parse(&file.to_text(), size).unwrap();
        assert_eq!(round, file, "{size} round-trips through text");
        let mel_w = file
            .weights
            .iter()
            .find(|w| w.name == "encoder.conv1.weight")
            .unwrap();
        assert_eq!(
            mel_w.shape,
            vec![dims.n_audio_state, dims.n_mels, 3],
            "{size}"
        );
        let emb = file
            .weights
            .iter()
            .find(|w| w.name == "decoder.token_embedding.weight")
            .unwrap();
        assert_eq!(emb.shape, vec![dims.n_vocab, dims.n_text_state], "{size}");
    }
}

fn graph_error(file: &ModelFile) -> (String, String, String) {
    match validate(file) {
        Err(RuntimeError::Graph {
            graph,
            node,
            reason,
        }) => (graph, node, reason),
        Err(other) => panic!("expected a graph error, got {other}"),
        Ok(_) => panic!("malformed graph was accepted"),
    }
}

fn node_mut<'a>(file: &'a mut ModelFile, graph: &str, node: &str) -> &'a mut NodeDef {
    let g = file.graphs.iter_mut().find(|g| g.name == graph).unwrap();
    g.nodes.iter_mut().find(|n| n.name == node).unwrap()
}

#[test]
fn unknown_op_names_node_and_suggests() {
    let mut f = base();
    node_mut(&mut f, "encoder", "block2.gelu").op = "gleu".into();
    let (g, n, r) = graph_error(&f);
    assert_eq!((g.as_str(), n.as_str()), ("encoder", "block2.gelu"));
    assert!(
        r.contains("unknown operator 'gleu'") && r.contains("did you mean 'gelu'"),
        "{r}"
    );
    assert!(r.contains("layer_norm"), "lists registered ops: {r}");
}

#[test]
fn cycle_is_rejected() {
    let mut f = base();
    // conv1 now consumes conv2's output: conv1 → conv1.gelu → conv2 → conv1.
    node_mut(&mut f, "encoder", "conv1").inputs[0] = "conv2".into();
    let (g, _n, r) = graph_error(&f);
    assert_eq!(g, "encoder");
    assert!(r.contains("cycle"), "{r}");
}

#[test]
fn shape_mismatch_is_rejected() {
    let mut f = base();
    // fc2 expects 2048 inputs; feed it the 512-wide norm output instead.
    node_mut(&mut f, "encoder", "block0.fc2").inputs[0] = "block0.mlp_ln".into();
    let (g, n, r) = graph_error(&f);
    assert_eq!((g.as_str(), n.as_str()), ("encoder", "block0.fc2"));
    assert!(r.contains("512") && r.contains("2048"), "{r}");
}

#[test]
fn dtype_mismatch_is_rejected() {
    let mut f = base();
    // Token ids (i32) into a layer norm.
    node_mut(&mut f, "decoder_step", "block0.attn_ln").inputs[0] = "tokens".into();
    let (_g, n, r) = graph_error(&f);
    assert_eq!(n, "block0.attn_ln");
    assert!(r.contains("expected f32, got i32"), "{r}");
}

#[test]
fn missing_weight_is_a_dangling_edge() {
    let mut f = base();
    f.weights
        .retain(|w| w.name != "encoder.blocks.3.attn.out.bias");
    let (g, n, r) = graph_error(&f);
    assert_eq!((g.as_str(), n.as_str()), ("encoder", "block3.attn_out"));
    assert!(
        r.contains("encoder.blocks.3.attn.out.bias") && r.contains("dangling"),
        "{r}"
    );
}

#[test]
fn bad_attribute_is_rejected() {
    let mut f = base();
    node_mut(&mut f, "encoder", "block1.attn")
        .attrs
        .insert("heads".into(), serde_json::json!(7));
    let (_g, n, r) = graph_error(&f);
    assert_eq!(n, "block1.attn");
    assert!(r.contains("not divisible by 7 heads"), "{r}");
}

#[test]
fn wrong_version_and_garbage_are_format_errors() {
    let text = base()
        .to_text()
        .replacen("\"version\": 1", "\"version\": 2", 1);
    let e = ModelFile::parse(&text, "v2.graph").unwrap_err().to_string();
    assert!(
        e.contains("v2.graph") && e.contains("unsupported version"),
        "{e}"
    );
    let e = ModelFile::parse(
        "{\"format\": \"amanuensis-graph\", \"version\": 1, \"model\": 3}",
        "x.graph",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("x.graph"), "{e}");
    let e = ModelFile::parse("not json", "y.graph")
        .unwrap_err()
        .to_string();
    assert!(e.contains("y.graph") && e.contains("not valid JSON"), "{e}");
}

#[test]
fn log_mel_with_an_odd_n_fft_is_rejected_not_a_panic() {
    // Found by the `graph` fuzz target (docs/reliability.md): a log_mel node whose settings
    // the operator's own check let through (an odd n_fft) made the front end's panicking
    // constructor (`LogMel::new`) panic.
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz-regressions/graph-log-mel-odd-n-fft.graph");
    let found = ModelFile::parse(&std::fs::read_to_string(&p).unwrap(), "found").unwrap();
    let (g, n, r) = graph_error(&found);
    assert_eq!((g.as_str(), n.as_str()), ("features", "log_mel"));
    assert!(r.contains("n_fft 401 must be even"), "{r}");
    // Each setting the front end refuses is an error naming the node, not a panic.
    for (attr, value, says) in [
        ("n_fft", serde_json::json!(401), "n_fft 401 must be even"),
        ("n_fft", serde_json::json!(1 << 17), "n_fft 131072"),
        ("n_mels", serde_json::json!(2000), "n_mels 2000"),
        ("hop_length", serde_json::json!(0), "hop 0"),
        (
            "sample_rate",
            serde_json::json!(1u64 << 32),
            "does not fit in 32 bits",
        ),
        ("n_frames", serde_json::json!(0), "n_frames must be > 0"),
    ] {
        let mut f = base();
        node_mut(&mut f, "features", "log_mel")
            .attrs
            .insert(attr.into(), value.clone());
        let (g, n, r) = graph_error(&f);
        assert_eq!((g.as_str(), n.as_str()), ("features", "log_mel"), "{attr}");
        assert!(r.contains(says), "{attr} = {value}: {r}");
    }
}

#[test]
fn a_float_with_more_digits_than_an_f64_holds_reads_back_as_the_same_number() {
    // Found by the `graph` fuzz target: `eps: 0.0001844674407370955161601` read as one f64
    // and, written back in its shortest form, read as the f64 next to it. The reader now
    // rounds every number correctly (serde_json's `float_roundtrip`), so a file written
    // by the runtime reads back unchanged.
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz-regressions/graph-float-attribute-with-25-digits.graph");
    let found = ModelFile::parse(&std::fs::read_to_string(&p).unwrap(), "found").unwrap();
    let again = ModelFile::parse(&found.to_text(), "written back").unwrap();
    assert_eq!(again, found);
    let eps = |f: &ModelFile| {
        f.graphs
            .iter()
            .flat_map(|g| &g.nodes)
            .find(|n| {
                n.inputs
                    .iter()
                    .any(|i| i == "decoder.blocks.5.mlp_ln.weight")
            })
            .map(|n| n.attrs["eps"].as_f64().unwrap())
            .unwrap()
    };
    let nearest: f64 = "0.0001844674407370955161601".parse().unwrap();
    assert_eq!(eps(&found).to_bits(), nearest.to_bits());
    assert_eq!(eps(&again).to_bits(), nearest.to_bits());
}

#[test]
fn bf16_transform_spares_the_first_block_whatever_the_node_order() {
    use amanuensis::whisper::graph::{bf16_encoder, ENCODER};
    let marked = |file: &ModelFile| -> Vec<String> {
        let enc = file.graphs.iter().find(|g| g.name == ENCODER).unwrap();
        let mut names: Vec<String> = enc
            .nodes
            .iter()
            .filter(|n| n.attrs.get("bf16_products") == Some(&serde_json::json!(true)))
            .map(|n| n.name.clone())
            .collect();
        names.sort();
        names
    };
    let mut file = base();
    assert_eq!(bf16_encoder(&mut file, false), Ok(35));
    // Every later block's attention, and the linears of the last block (the middle ones
    // run int8 whatever their attribute; the first block's stay f32).
    let mut want: Vec<String> = (1..6).map(|b| format!("block{b}.attn")).collect();
    for b in 1..6 {
        for l in ["q", "k", "v", "attn_out", "fc1", "fc2"] {
            want.push(format!("block{b}.{l}"));
        }
    }
    want.sort();
    assert_eq!(marked(&file), want);
    // The transformed graphs still validate (the op knows the attribute).
    validate(&file).unwrap();
    // Listed in reverse, the nodes get the same marks: "first" is by data flow.
    let mut reversed = base();
    for g in &mut reversed.graphs {
        g.nodes.reverse();
    }
    bf16_encoder(&mut reversed, false).unwrap();
    assert_eq!(marked(&reversed), want);
    // On AMX tiles the first block is marked too: its attention and its linears.
    let mut all = base();
    assert_eq!(bf16_encoder(&mut all, true), Ok(42));
    let mut want_all = want.clone();
    want_all.push("block0.attn".into());
    for l in ["q", "k", "v", "attn_out", "fc1", "fc2"] {
        want_all.push(format!("block0.{l}"));
    }
    want_all.sort();
    assert_eq!(marked(&all), want_all);
    validate(&all).unwrap();
    // An encoder of one block has nothing to mark (and still loads as it is).
    let mut one = build_whisper_graph(
        "one",
        &WhisperDims {
            n_audio_layer: 1,
            ..WhisperDims::for_size("base").unwrap()
        },
    );
    assert_eq!(bf16_encoder(&mut one, false), Ok(0));
    // With the first block, its nodes are marked.
    assert_eq!(bf16_encoder(&mut one, true), Ok(7));
}

#[test]
fn bf16x3_transform_marks_the_encoder_attention_and_block_linears_and_nothing_else() {
    use amanuensis::whisper::graph::{bf16x3_encoder, ENCODER};
    let mut file = base();
    // 6 attention nodes and the 6 linears of each of the 6 blocks.
    assert_eq!(bf16x3_encoder(&mut file), 6 + 6 * 6);
    for g in &file.graphs {
        for n in &g.nodes {
            let marked = n.attrs.get("bf16x3") == Some(&serde_json::json!(true));
            let block_linear = n.op == "linear"
                && n.inputs
                    .get(1)
                    .is_some_and(|w| w.starts_with("encoder.blocks."));
            let want = g.name == ENCODER && (n.op == "attention" || block_linear);
            assert_eq!(marked, want, "{} / {}", g.name, n.name);
        }
    }
    // The transformed graphs still validate (the ops know the attribute).
    validate(&file).unwrap();
}

#[test]
fn the_f16_cross_kv_transform_narrows_the_cross_keys_and_values_end_to_end() {
    use amanuensis::whisper::graph::{f16_cross_kv, windows_decoder_graph, CROSS_KV};
    use amanuensis_runtime::DType;
    let mut file = base();
    // 6 decoder layers × keys and values.
    assert_eq!(f16_cross_kv(&mut file), Ok(12));
    let is_cross = |n: &str| n.starts_with("cross_k.") || n.starts_with("cross_v.");
    for g in &file.graphs {
        for n in &g.nodes {
            let marked = n.attrs.get("f16_output") == Some(&serde_json::json!(true));
            let produces = n.outputs.iter().any(|o| is_cross(o));
            assert_eq!(
                marked,
                g.name == CROSS_KV && produces,
                "{} {}",
                g.name,
                n.name
            );
        }
        for d in g.inputs.iter().chain(&g.outputs) {
            let want = if is_cross(&d.name) {
                DType::F16
            } else {
                d.dtype
            };
            assert_eq!(d.dtype, want, "{} {}", g.name, d.name);
        }
    }
    // Every graph reading them (decoder_step, decoder_align) declares them f16.
    let readers = file
        .graphs
        .iter()
        .filter(|g| {
            g.inputs
                .iter()
                .any(|i| is_cross(&i.name) && i.dtype == DType::F16)
        })
        .count();
    assert_eq!(readers, 2);
    // The edited file validates: the linear infers f16, the attention takes it.
    validate(&file).unwrap();
    // The derived lockstep graph inherits the f16 inputs.
    let windows = windows_decoder_graph(&file, false).unwrap();
    assert!(windows
        .inputs
        .iter()
        .filter(|i| is_cross(&i.name))
        .all(|i| i.dtype == DType::F16 && i.shape.len() == 3));
    // A file whose cross K/V graph produces nothing of that name is refused, as is one
    // whose cross K/V values do not come from a linear.
    let mut none = base();
    none.graphs
        .iter_mut()
        .find(|g| g.name == CROSS_KV)
        .unwrap()
        .outputs
        .clear();
    assert!(f16_cross_kv(&mut none)
        .unwrap_err()
        .contains("no cross K/V outputs"));
    let mut odd = base();
    node_mut(&mut odd, CROSS_KV, "cross_k.0").op = "gelu".into();
    assert!(f16_cross_kv(&mut odd).unwrap_err().contains("not a linear"));
}

#[test]
fn cross_keys_and_values_stored_by_head_validate_and_reach_every_reader() {
    use amanuensis::whisper::graph::{
        f16_cross_kv, heads_major_cross_kv, windows_decoder_graph, windows_encoder_graph, CROSS_KV,
    };
    use amanuensis_runtime::format::Dim;
    let mut file = base();
    f16_cross_kv(&mut file).unwrap();
    // 6 decoder layers × keys and values, each through a split_heads node of 8 heads.
    assert_eq!(heads_major_cross_kv(&mut file, 8), Ok(12));
    let is_cross = |n: &str| n.starts_with("cross_k.") || n.starts_with("cross_v.");
    let by_head = vec![Dim::Known(8), Dim::Known(1500), Dim::Known(64)];
    let cross = file.graphs.iter().find(|g| g.name == CROSS_KV).unwrap();
    for out in cross.outputs.iter().filter(|o| is_cross(&o.name)) {
        assert_eq!(out.shape, by_head, "{}", out.name);
        let producer = cross
            .nodes
            .iter()
            .find(|n| n.outputs.contains(&out.name))
            .unwrap();
        assert_eq!(producer.op, "split_heads", "{}", out.name);
        assert_eq!(producer.attrs["heads"], serde_json::json!(8));
    }
    // Every reader declares them so, and each of its 6 cross-attention nodes reads them
    // by head; no other attention node does.
    for g in file.graphs.iter().filter(|g| g.name != CROSS_KV) {
        for i in g.inputs.iter().filter(|i| is_cross(&i.name)) {
            assert_eq!(i.shape, by_head, "{} {}", g.name, i.name);
        }
        for n in g.nodes.iter().filter(|n| n.op == "attention") {
            let marked = n.attrs.get("kv_heads_major") == Some(&serde_json::json!(true));
            assert_eq!(marked, is_cross(&n.inputs[1]), "{} {}", g.name, n.name);
        }
    }
    let marked = file
        .graphs
        .iter()
        .flat_map(|g| &g.nodes)
        .filter(|n| n.attrs.contains_key("kv_heads_major"))
        .count();
    assert_eq!(
        marked, 12,
        "decoder_step's and decoder_align's cross-attention"
    );
    validate(&file).unwrap();
    // The derived graphs take a windows dim in front.
    let windows = windows_decoder_graph(&file, false).unwrap();
    let encoder = windows_encoder_graph(&file).unwrap();
    for decl in windows
        .inputs
        .iter()
        .chain(&encoder.outputs)
        .filter(|i| is_cross(&i.name))
    {
        assert_eq!(decl.shape.len(), 4, "{}", decl.name);
        assert_eq!(decl.shape[1..], by_head[..], "{}", decl.name);
    }
    // A head count that does not divide the model dim is refused.
    let mut odd = base();
    assert!(heads_major_cross_kv(&mut odd, 7)
        .unwrap_err()
        .contains("divisible by 7 heads"));
}

#[test]
fn self_attention_caches_stored_by_head_validate() {
    use amanuensis::whisper::graph::{heads_major_self_kv, windows_decoder_graph, DECODER_STEP};
    use amanuensis_runtime::format::Dim;
    let mut file = base();
    // One kv_cache_attention node per decoder layer, in decoder_step.
    assert_eq!(heads_major_self_kv(&mut file), Ok(6));
    let step = file.graphs.iter().find(|g| g.name == DECODER_STEP).unwrap();
    assert_eq!(step.states.len(), 12);
    for s in &step.states {
        assert_eq!(
            s.shape,
            vec![
                Dim::Sym("batch".into()),
                Dim::Known(8),
                Dim::Known(448),
                Dim::Known(64)
            ],
            "{}",
            s.name
        );
    }
    validate(&file).unwrap();
    let windows = windows_decoder_graph(&file, false).unwrap();
    assert!(windows.states.iter().all(|s| s.shape.len() == 4));
    // Applied twice, the states are no longer [batch, n, s]: refused.
    assert!(heads_major_self_kv(&mut file)
        .unwrap_err()
        .contains("not [batch, n, s]"));
}

#[test]
fn the_bf16_compute_type_marks_every_linear_the_encoder_attention_and_gelu() {
    use amanuensis::whisper::graph::{bf16_products, f32_encoder_gelu, ENCODER};
    let mut file = base();
    let linears = |f: &ModelFile| -> usize {
        f.graphs
            .iter()
            .flat_map(|g| &g.nodes)
            .filter(|n| n.op == "linear")
            .count()
    };
    let n_linear = linears(&file);
    // Every linear of every graph, and the encoder's 6 attention nodes.
    assert_eq!(bf16_products(&mut file), n_linear + 6);
    // The encoder's GELUs: after each convolution and in each block's MLP.
    assert_eq!(f32_encoder_gelu(&mut file), 2 + 6);
    validate(&file).unwrap();
    for g in &file.graphs {
        for n in &g.nodes {
            let bf16 = n.attrs.get("bf16_products") == Some(&serde_json::json!(true));
            let f32_math = n.attrs.get("f32_math") == Some(&serde_json::json!(true));
            let encoder = g.name == ENCODER;
            assert_eq!(
                bf16,
                n.op == "linear" || (encoder && n.op == "attention"),
                "{} {}",
                g.name,
                n.name
            );
            assert_eq!(f32_math, encoder && n.op == "gelu", "{} {}", g.name, n.name);
        }
    }
}

#[test]
fn the_cpu_plan_fuses_linear_chains_and_keeps_the_compute_types_attributes() {
    // The host device runs the scheduler's fusion pass like an accelerator: linear → gelu
    // and linear → add become the fused ops, and a linear's compute-type attributes (and a
    // GELU's) move onto the fused node, so it computes what the chain computed.
    use amanuensis::whisper::graph::{bf16_encoder, f16_cross_kv, ENCODER};
    use amanuensis_runtime::device::CpuDevice;
    use amanuensis_runtime::schedule::{plan, SchedulerOptions};
    let reg = amanuensis_operators::standard_registry();
    let mut file = base();
    bf16_encoder(&mut file, false).unwrap();
    f16_cross_kv(&mut file).unwrap();
    let mut fused_total = 0;
    for g in validate(&file).unwrap() {
        let name = g.name.clone();
        let p = plan(g, &reg, &CpuDevice, &SchedulerOptions::full()).unwrap();
        fused_total += p.fused.len();
        if name == ENCODER {
            // Two convolutions with their GELU, each block's fc1 + GELU, and each block's
            // two projections into the residual stream.
            // Each block's q, k and v as one product, each block's two layer norms moved
            // into the products they feed (rounds after the first).
            let count = |pattern: &str| p.fused.iter().filter(|f| f.pattern == pattern).count();
            assert_eq!(
                (
                    count("conv1d_gelu"),
                    count("linear_gelu"),
                    count("linear_residual"),
                    count("linear_group"),
                    count("layer_norm_linear_group"),
                    count("layer_norm_linear_gelu"),
                ),
                (2, 6, 12, 6, 6, 6)
            );
            for (_, n) in p.graph.live_nodes() {
                if ["linear_gelu", "linear_residual", "linear_group"].contains(&n.op_name.as_str())
                {
                    // The last block's linears carry bf16_products; the first's none.
                    let bf16 = n.attrs.0.get("bf16_products") == Some(&serde_json::json!(true));
                    assert_eq!(bf16, !n.name.starts_with("block0."), "{}", n.name);
                }
            }
        }
        // The cross K/V linears, which write f16, are one group that keeps the attribute.
        for (_, n) in p.graph.live_nodes() {
            if n.attrs.0.contains_key("f16_output") {
                assert_eq!(n.op_name, "linear_group", "{}", n.name);
                assert_eq!(n.outputs.len(), 12, "{}", n.name);
            }
        }
        // Skipping the pass leaves every node as it was.
        let unfused = plan(
            validate(&file)
                .unwrap()
                .into_iter()
                .find(|g| g.name == name)
                .unwrap(),
            &reg,
            &CpuDevice,
            &SchedulerOptions::full().skipping("fusion"),
        )
        .unwrap();
        assert!(unfused.fused.is_empty());
    }
    // Encoder 38; decoder_step and decoder_align 49 each (their q, k and v are six
    // groups, and seven layer norms move into the linears they feed: self-attention's,
    // cross-attention's query, the MLP's and the final one into the logits); cross_kv 1
    // (every block's keys and values).
    assert_eq!(fused_total, 38 + 49 + 49 + 1);
}
