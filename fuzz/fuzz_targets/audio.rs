//! Any audio container and codec through `AudioStream::from_bytes` (seekable input):
//! sniffing, the WAV header checks, symphonia's demuxers and decoders behind our panic
//! guard, our Ogg Opus demuxer, the MP4 edit-list reader, trimming and resampling.
#![no_main]

use amanuensis::audio::{install_panic_filter, AudioStream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    amanuensis_fuzz::begin_input(data.len());
    // As the program does at start: decoder panics caught by the audio module are damaged
    // data, any other panic still aborts (through libFuzzer's hook, installed before).
    static PANIC_FILTER: std::sync::Once = std::sync::Once::new();
    PANIC_FILTER.call_once(install_panic_filter);
    if let Ok(stream) = AudioStream::from_bytes(data.to_vec(), None) {
        let _ = stream.collect_all();
    }
});
