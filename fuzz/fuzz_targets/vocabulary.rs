//! `vocabulary.txt`: `Tokenizer::from_vocabulary_str` (special-token layout checks), then
//! decoding of every id (and some past the end) and the prompt-building lookups.
#![no_main]

use amanuensis::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    amanuensis_fuzz::begin_input(data.len());
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tok) = Tokenizer::from_vocabulary_str(text) else {
        return;
    };
    let n = tok.n_vocab() as u32;
    let ids: Vec<u32> = (0..n.min(4096)).chain([n, n + 1, u32::MAX]).collect();
    let _ = tok.decode(&ids);
    let _ = tok.decode_with_timestamps(&ids);
    for &id in &ids {
        let _ = tok.token_str(id);
        let _ = tok.timestamp_seconds(id);
        let _ = tok.language_code(id);
    }
    for code in tok.language_codes() {
        assert!(tok.language_token(code).is_some());
    }
});
