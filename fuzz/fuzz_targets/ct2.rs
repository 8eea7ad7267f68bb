//! CTranslate2 `model.bin`: `Ct2Model::parse`, alias resolution, the Whisper mapping
//! (`map_whisper`) and the in-memory half of the conversion (serialise to safetensors and
//! read it back), i.e. `convert_ct2` without its file system steps.
#![no_main]

use amanuensis_weights_tools::convert::{default_name, map_whisper};
use amanuensis_weights_tools::ct2::Ct2Model;
use amanuensis_weights_tools::st::{serialize_safetensors, validate, TensorRef};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    amanuensis_fuzz::begin_input(data.len());
    let Ok(model) = Ct2Model::parse(data, "model.bin") else {
        return;
    };
    assert!(model.payload_bytes() <= data.len() as u64);
    let names: Vec<String> = model.variables.iter().map(|v| v.name.clone()).collect();
    for name in &names {
        let _ = model.resolve(name);
    }
    let Ok(mapped) = map_whisper(&model, "model.bin") else {
        return;
    };
    let _ = default_name(&mapped.dims);
    let refs: Vec<TensorRef<'_>> = mapped
        .tensors
        .iter()
        .map(|t| TensorRef {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            data: t.data,
        })
        .collect();
    let bytes = serialize_safetensors(&refs, &BTreeMap::new())
        .expect("mapped tensors serialise to safetensors");
    validate(&bytes, Path::new("model.safetensors"))
        .expect("what the converter writes, the reader reads");
});
