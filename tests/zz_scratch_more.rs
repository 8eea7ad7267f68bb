use amanuensis::audio::{load_audio, AudioStream};
fn ncc(a: &[f32], b: &[f32], lag: isize) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &x) in a.iter().enumerate() { let j = i as isize + lag; if j < 0 || j as usize >= b.len() { continue; } let y = b[j as usize];
        ab += x as f64 * y as f64; aa += x as f64 * x as f64; bb += y as f64 * y as f64; }
    ab / (aa * bb).sqrt()
}
#[test]
fn more() {
    let want = load_audio(std::path::Path::new("tests/data/audio/jfk.wav")).unwrap();
    for f in ["x_opus.mp4", "x_opus.mka"] {
        let p = std::path::Path::new("/tmp/af").join(f);
        match AudioStream::open(&p).and_then(|s| { eprint!("{f}: {} {} ", s.container(), s.codec()); s.collect_all() }) {
            Ok(v) => { let mut best=(0,-1.0); for lag in -1200..=1200 { let c = ncc(&v,&want,lag); if c > best.1 { best=(lag,c);} } eprintln!("len {} best {:?}", v.len(), best) },
            Err(e) => eprintln!("ERR {e}"),
        }
    }
}
