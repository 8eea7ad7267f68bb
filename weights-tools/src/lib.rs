//! weights-tool library: a bounds-checked CTranslate2 `model.bin` reader, the CT2 Whisper →
//! safetensors converter, an ONNX reader and the Silero VAD v6 → safetensors converter,
//! validated safetensors reading, the `inspect` report, and `verify` of a weight file
//! against a graph file.

pub mod convert;
pub mod ct2;
pub mod fsutil;
pub mod inspect;
pub mod onnx;
pub mod silero;
pub mod st;
pub mod verify;
