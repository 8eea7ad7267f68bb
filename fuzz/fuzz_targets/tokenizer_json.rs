//! `tokenizer.json`: `Tokenizer::load_bpe_str` against a small Whisper-layout vocabulary
//! (`fuzz/data/small-vocabulary.txt`), then `encode` of a text. Input: the JSON, then
//! optionally a NUL byte and the text to encode (a fixed sentence otherwise).
#![no_main]

use amanuensis::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static VOCAB: Tokenizer = Tokenizer::from_vocabulary_str(&amanuensis_fuzz::small_vocabulary())
        .expect("the small vocabulary is valid");
}

fuzz_target!(|data: &[u8]| {
    amanuensis_fuzz::begin_input(data.len());
    let (json, text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (
            data,
            &b"And so, my fellow Americans: <|endoftext|> 123!"[..],
        ),
    };
    let (Ok(json), Ok(text)) = (std::str::from_utf8(json), std::str::from_utf8(text)) else {
        return;
    };
    let mut tok = VOCAB.with(Tokenizer::clone);
    if tok.load_bpe_str(json).is_err() {
        return;
    }
    if let Ok(ids) = tok.encode(text) {
        assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
        let _ = tok.decode(&ids);
    }
});
