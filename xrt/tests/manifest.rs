//! The kernel manifest: the example file is valid, lookups use kernel + shapes + attrs, and
//! every malformed manifest is refused with the file and the entry named.

use amanuensis_xrt::{ArgBinding, ArgDtype, Manifest, ManifestError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/npu/manifest.json")
}

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(text, Path::new("/k/manifest.json"), Path::new("/k"))
}

fn entry(extra: &str) -> String {
    format!(
        r#"{{"format":"amanuensis-npu-kernels","version":1,"kernels":[{{"kernel":"gelu","inputs":[[4,8]],"xclbin":"g.xclbin","insts":"g.bin",
        "args":[{{"input":0,"dtype":"f32"}},{{"output":0,"dtype":"f32"}}]{extra}}}]}}"#
    )
}

#[test]
fn example_manifest_is_valid_and_resolves_paths() {
    let m = Manifest::load(&example()).expect("the example manifest is valid");
    assert_eq!(m.target(), Some("npu1"));
    assert_eq!(m.entries().len(), 5);
    let none = BTreeMap::new();
    let e = m
        .find(
            "matmul_bias_gelu",
            &[vec![1500, 512], vec![2048, 512], vec![2048]],
            &none,
        )
        .expect("fc1 variant");
    assert_eq!(
        e.xclbin,
        example()
            .parent()
            .unwrap()
            .join("matmul/whole_array_bf16_gelu.xclbin")
    );
    assert_eq!(e.xclbin_kernel, "MLIR_AIE");
    assert_eq!(e.args[0].dtype, ArgDtype::Bf16);
    assert_eq!(e.args[3].binding, ArgBinding::Output(0));
    // conv1d is keyed by its attributes too.
    let shapes = [vec![80, 3000], vec![512, 80, 3], vec![512]];
    let mut attrs = BTreeMap::new();
    assert!(
        m.find("conv1d", &shapes, &attrs).is_none(),
        "stride/padding must match"
    );
    attrs.insert("stride".to_string(), serde_json::json!(1));
    attrs.insert("padding".to_string(), serde_json::json!(1));
    assert!(m.find("conv1d", &shapes, &attrs).is_some());
    attrs.insert("stride".to_string(), serde_json::json!(2));
    assert!(m.find("conv1d", &shapes, &attrs).is_none());
    // Two matmul_bias variants (with and without bias) are told apart by their inputs.
    assert_eq!(
        m.find("matmul_bias", &[vec![1500, 512], vec![512, 512]], &none)
            .unwrap()
            .args
            .len(),
        3
    );
    assert_eq!(
        m.find(
            "matmul_bias",
            &[vec![1500, 512], vec![512, 512], vec![512]],
            &none
        )
        .unwrap()
        .args
        .len(),
        4
    );
    assert!(m
        .find(
            "matmul_bias",
            &[vec![1499, 512], vec![512, 512], vec![512]],
            &none
        )
        .is_none());
    // The example's binaries are not in the repository.
    assert_eq!(m.missing_files().len(), 5);
}

#[test]
fn label_names_kernel_variant_and_attrs() {
    let m = Manifest::load(&example()).unwrap();
    assert_eq!(
        m.entries()[0].label(),
        "conv1d (variant 80x3000, 512x80x3, 512; padding=1, stride=1)"
    );
    assert_eq!(
        m.entries()[1].label(),
        "layer_norm (variant 1500x512, 512, 512)"
    );
}

#[test]
fn malformed_manifests_are_refused_with_a_reason() {
    let cases: Vec<(String, &str)> = vec![
        ("{".to_string(), "line 1, column 1"),
        (
            entry("").replace("amanuensis-npu-kernels", "other"),
            "format is 'other'",
        ),
        (
            entry("").replace("\"version\":1", "\"version\":2"),
            "version 2 is not supported",
        ),
        (entry(r#","bogus":1"#), "unknown field `bogus`"),
        (
            entry("").replace("[[4,8]]", "[[4,0]]"),
            "kernels[0] ('gelu'): input shapes must have no zero dimension",
        ),
        (
            entry("").replace(
                r#"{"input":0,"dtype":"f32"}"#,
                r#"{"input":1,"dtype":"f32"}"#,
            ),
            "args[0] refers to input 1, but the variant has 1 inputs",
        ),
        (
            entry("").replace(
                r#"{"output":0,"dtype":"f32"}"#,
                r#"{"input":0,"dtype":"bf16"}"#,
            ),
            "args[1] repeats Input(0)",
        ),
        (
            entry("").replace(r#",{"output":0,"dtype":"f32"}"#, ""),
            "no output argument",
        ),
        (
            entry("").replace(
                r#"{"input":0,"dtype":"f32"}"#,
                r#"{"input":0,"output":0,"dtype":"f32"}"#,
            ),
            "needs exactly one of",
        ),
        (
            entry("").replace(r#""dtype":"f32"}]"#, r#""dtype":"f64"}]"#),
            "unknown variant `f64`",
        ),
        (
            entry("").replace("\"kernel\":\"gelu\"", "\"kernel\":\"\""),
            "kernels[0]: empty kernel name",
        ),
    ];
    for (text, want) in cases {
        let err = parse(&text).expect_err(&text).to_string();
        assert!(
            err.starts_with("kernel manifest /k/manifest.json: "),
            "{err}"
        );
        assert!(err.contains(want), "expected '{want}' in: {err}");
    }
}

#[test]
fn duplicate_variants_are_refused_unless_attrs_differ() {
    let one = r#"{"kernel":"gelu","inputs":[[4,8]],"xclbin":"g.xclbin","insts":"g.bin","args":[{"output":0,"dtype":"f32"}]ATTRS}"#;
    let doc = |a: &str, b: &str| {
        format!(
            r#"{{"format":"amanuensis-npu-kernels","version":1,"kernels":[{},{}]}}"#,
            one.replace("ATTRS", a),
            one.replace("ATTRS", b)
        )
    };
    let err = parse(&doc("", "")).unwrap_err().to_string();
    assert!(
        err.contains("kernels[1] ('gelu'): same kernel, input shapes and attrs as kernels[0]"),
        "{err}"
    );
    let m = parse(&doc(
        r#","attrs":{"approx":false}"#,
        r#","attrs":{"approx":true}"#,
    ))
    .expect("attrs tell them apart");
    let mut attrs = BTreeMap::new();
    attrs.insert("approx".to_string(), serde_json::json!(true));
    assert_eq!(m.find_index("gelu", &[vec![4, 8]], &attrs), Some(1));
}

#[test]
fn unreadable_manifest_names_the_file() {
    let err = Manifest::load(Path::new("/nonexistent/dir/manifest.json")).unwrap_err();
    assert!(matches!(err, ManifestError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("kernel manifest /nonexistent/dir/manifest.json: "),
        "{err}"
    );
}
