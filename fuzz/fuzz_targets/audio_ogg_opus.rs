//! Ogg Opus through a forward-only reader (as from standard input): our Ogg page reader
//! (CRC, resynchronisation, lacing), the Opus header and multistream parsing, granule
//! trimming and chained streams. Seeds are Ogg Opus files only.
#![no_main]

use amanuensis::audio::{install_panic_filter, AudioStream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    amanuensis_fuzz::begin_input(data.len());
    static PANIC_FILTER: std::sync::Once = std::sync::Once::new();
    PANIC_FILTER.call_once(install_panic_filter);
    let reader = std::io::Cursor::new(data.to_vec());
    if let Ok(stream) = AudioStream::from_reader(reader, "fuzz input") {
        for chunk in stream {
            if chunk.is_err() {
                break;
            }
        }
    }
});
