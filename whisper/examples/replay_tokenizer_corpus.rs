// Temporary: replays the tokenizer_json fuzz corpus without ASan (not committed).
use amanuensis_whisper::tokenizer::Tokenizer;
fn main() {
    let vocab = std::fs::read_to_string("fuzz/data/small-vocabulary.txt").unwrap();
    let base = Tokenizer::from_vocabulary_str(&vocab).unwrap();
    let mut n = 0;
    let mut loaded = 0;
    for dir in ["fuzz/corpus/tokenizer_json", "fuzz/seeds/tokenizer_json"] {
        for e in std::fs::read_dir(dir).unwrap() {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            n += 1;
            let (json, text) = match data.iter().position(|&b| b == 0) {
                Some(i) => (&data[..i], &data[i + 1..]),
                None => (
                    &data[..],
                    &b"And so, my fellow Americans: <|endoftext|> 123!"[..],
                ),
            };
            let (Ok(json), Ok(text)) = (std::str::from_utf8(json), std::str::from_utf8(text))
            else {
                continue;
            };
            let mut tok = base.clone();
            if tok.load_bpe_str(json).is_err() {
                continue;
            }
            loaded += 1;
            if let Ok(ids) = tok.encode(text) {
                assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
                let _ = tok.decode(&ids);
            }
        }
    }
    println!("replayed {n} inputs, {loaded} loaded, no panic");
}
