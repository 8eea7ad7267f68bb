//! MP4/M4A: our edit-list (`elst`) box walker, symphonia's isomp4 demuxer, AAC, ALAC and
//! Opus-in-MP4 (`dOps`), both from memory and from a forward-only reader (which buffers
//! the whole file first). Seeds are MP4 files only.
#![no_main]

use amanuensis::audio::{install_panic_filter, AudioStream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    amanuensis_fuzz::begin_input(data.len());
    static PANIC_FILTER: std::sync::Once = std::sync::Once::new();
    PANIC_FILTER.call_once(install_panic_filter);
    if let Ok(stream) = AudioStream::from_bytes(data.to_vec(), Some("m4a")) {
        let _ = stream.collect_all();
    }
    let reader = std::io::Cursor::new(data.to_vec());
    if let Ok(mut stream) = AudioStream::from_reader(reader, "fuzz input") {
        // The first chunk is enough to cross the buffering and the edit-list paths.
        let _ = stream.next_chunk();
    }
});
