//! ONNX models: prost's decoding of the `onnx.proto` subset (`OnnxModel::decode`), the
//! typed initializer readers, the Silero VAD validation and mapping (`map_silero`) at the
//! real sizes and at the miniature ones the seeds use (a real-sized model does not fit in
//! a fuzz input), and the in-memory half of the conversion (serialise to safetensors and
//! read it back), i.e. `convert_silero_vad` without its file system steps.
#![no_main]

use amanuensis_weights_tools::onnx::OnnxModel;
use amanuensis_weights_tools::silero::{map_silero, serialize_vad, SileroDims};
use amanuensis_weights_tools::st::validate;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    amanuensis_fuzz::begin_input(data.len());
    let Ok(model) = OnnxModel::decode(data, "model.onnx") else {
        return;
    };
    for t in &model.graph.initializer {
        let _ = model.dims(t);
        if let Ok(bytes) = model.f32_le(t) {
            assert!(
                bytes.len() <= 4 * data.len(),
                "f32 data larger than the input"
            );
        }
        let _ = model.i64s(t);
    }
    let _ = model.default_opset();
    for dims in [SileroDims::V6, SileroDims::TINY] {
        let Ok(mapped) = map_silero(&model, "model.onnx", &dims) else {
            continue;
        };
        assert_eq!(mapped.tensors.len(), 14);
        let bytes = serialize_vad(&mapped.tensors, &BTreeMap::new())
            .expect("mapped tensors serialise to safetensors");
        validate(&bytes, Path::new("model.safetensors"))
            .expect("what the converter writes, the reader reads");
    }
});
