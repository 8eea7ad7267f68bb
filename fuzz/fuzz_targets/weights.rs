//! safetensors weight files: listed, checked against a graph's weight declarations and
//! loaded (`list_tensors_in`, `check_declarations`, `WeightStore::from_bytes`). The
//! declarations are those of the example plugin's graph (f32) and a small f16/i32 set.
#![no_main]

use amanuensis_runtime::format::WeightDecl;
use amanuensis_runtime::weights::{check_declarations, list_tensors_in};
use amanuensis_runtime::{DType, ModelFile, WeightStore};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

thread_local! {
    static DECLS: [Vec<WeightDecl>; 2] = [
        ModelFile::parse(amanuensis_fuzz::SWISH_MLP_GRAPH, "swish-mlp.graph")
            .expect("the example graph parses")
            .weights,
        vec![
            WeightDecl { name: "a".into(), dtype: DType::F16, shape: vec![2, 3] },
            WeightDecl { name: "b".into(), dtype: DType::I32, shape: vec![4] },
            WeightDecl { name: "c".into(), dtype: DType::F32, shape: vec![] },
        ],
    ];
}

fuzz_target!(|data: &[u8]| {
    amanuensis_fuzz::begin_input(data.len());
    let path = Path::new("fuzz.safetensors");
    let Ok(stored) = list_tensors_in(data, path) else {
        return;
    };
    DECLS.with(|sets| {
        for decls in sets {
            let problems = check_declarations(decls, &stored);
            let loaded = WeightStore::from_bytes(data, path, decls);
            // The check and the load agree on whether the file fits the declarations.
            assert_eq!(problems.is_empty(), loaded.is_ok(), "{problems:?}");
            if let Ok(store) = loaded {
                assert!(store.bytes() <= 2 * data.len() + 64);
            }
        }
    });
});
