//! Beam search, temperature sampling and the temperature fallback, driven by scripted
//! batched decoders whose logits are a function of each sequence's whole history (so a
//! wrong `reorder` changes what the decoder sees).
//!
//! Expected values are computed by hand from the scripted logits with a float64
//! log-softmax; sums of float32 log-probabilities are compared within 1e-5.

use amanuensis::decoding::{
    beam_search, decode_with_fallback, greedy_decode, log_softmax, sample_decode, BatchStepModel,
    BeamOptions, DecodeError, DecodeOptions, FallbackOptions, LogitFilter, SingleSequence,
    SpecialIds, StepError, SuppressBlank, SuppressTokens, TimestampRules, MAX_HYPOTHESES,
};
use amanuensis::transcript::compression_ratio;

// ---------------------------------------------------------------------------------------
// A tiny vocabulary

const BLANK: u32 = 0;
const A: u32 = 1;
const B: u32 = 2;
const C: u32 = 3;
const D: u32 = 4;
const E: u32 = 5;
const F: u32 = 6;
const G: u32 = 7;
const EOT: u32 = 10;
const SOT: u32 = 11;
const EN: u32 = 12;
const TRANSCRIBE: u32 = 15;
const PREV: u32 = 17;
const NO_SPEECH: u32 = 18;
const NO_TS: u32 = 19;
const TS0: u32 = 20;
const N_VOCAB: usize = 32;
const NEG_INF: f32 = f32::NEG_INFINITY;

fn ids() -> SpecialIds {
    SpecialIds {
        n_vocab: N_VOCAB,
        eot: EOT,
        sot: SOT,
        no_speech: NO_SPEECH,
        no_timestamps: NO_TS,
        timestamp_begin: TS0,
    }
}

fn prompt(timestamps: bool) -> Vec<u32> {
    if timestamps {
        vec![SOT, EN, TRANSCRIBE]
    } else {
        vec![SOT, EN, TRANSCRIBE, NO_TS]
    }
}

fn opts(timestamps: bool) -> DecodeOptions {
    DecodeOptions {
        without_timestamps: !timestamps,
        suppress_blank: true,
        suppress_tokens: vec![],
        suppress_blank_tokens: vec![BLANK, EOT],
        max_initial_timestamp_index: None,
        max_length: 448,
    }
}

fn beam(beam_size: usize, patience: f32, length_penalty: f32) -> BeamOptions {
    BeamOptions {
        beam_size,
        patience,
        length_penalty,
    }
}

/// Logits of `rest` everywhere except the listed ids.
fn logits_with(rest: f32, set: &[(u32, f32)]) -> Vec<f32> {
    let mut v = vec![rest; N_VOCAB];
    for &(id, x) in set {
        v[id as usize] = x;
    }
    v
}

/// log-softmax of one entry in float64, −∞ entries excluded.
fn ref_lp(x: &[f32], id: u32) -> f64 {
    let m = x.iter().copied().fold(NEG_INF, f32::max) as f64;
    let z: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
    x[id as usize] as f64 - m - z.ln()
}

/// `x` with the first-step blank suppression applied.
fn blanked(mut x: Vec<f32>) -> Vec<f32> {
    x[BLANK as usize] = NEG_INF;
    x[EOT as usize] = NEG_INF;
    x
}

// ---------------------------------------------------------------------------------------
// The scripted batched decoder

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Reset,
    Step(Vec<Vec<u32>>, Vec<usize>),
    Reorder(Vec<usize>),
}

type Script = Box<dyn Fn(usize, &[u32]) -> Vec<f32>>;

/// Holds one history per sequence; logits at a position are `script(attempt, history up
/// to and including that position)`, where `attempt` counts resets from 0.
struct Fake {
    seqs: Vec<Vec<u32>>,
    /// Logits last returned for each sequence's last position.
    last_logits: Vec<Option<Vec<f32>>>,
    resets: usize,
    script: Script,
    events: Vec<Event>,
    /// Every history the decoder was fed, in order.
    histories: Vec<Vec<u32>>,
    /// Panic when a fed token had logit −∞ in the logits this sequence returned last:
    /// such a token was chosen from another sequence's logits.
    check_continuity: bool,
}

impl Fake {
    fn new(script: impl Fn(usize, &[u32]) -> Vec<f32> + 'static) -> Fake {
        Fake {
            seqs: vec![Vec::new()],
            last_logits: vec![None],
            resets: 0,
            script: Box::new(script),
            events: Vec::new(),
            histories: Vec::new(),
            check_continuity: false,
        }
    }

    /// A decoder whose script ignores the attempt number.
    fn simple(script: impl Fn(&[u32]) -> Vec<f32> + 'static) -> Fake {
        Fake::new(move |_, h| script(h))
    }

    fn checked(mut self) -> Fake {
        self.check_continuity = true;
        self
    }

    fn reorders(&self) -> Vec<Vec<usize>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Reorder(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn fed_rows(&self) -> Vec<Vec<Vec<u32>>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Step(t, _) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }
}

impl BatchStepModel for Fake {
    fn step(
        &mut self,
        tokens: &[Vec<u32>],
        logit_positions: &[usize],
    ) -> Result<Vec<Vec<Vec<f32>>>, StepError> {
        self.events
            .push(Event::Step(tokens.to_vec(), logit_positions.to_vec()));
        if tokens.len() != self.seqs.len() {
            return Err(StepError::from(format!(
                "{} rows for a batch of {}",
                tokens.len(),
                self.seqs.len()
            )));
        }
        let n = tokens[0].len();
        if !tokens.iter().all(|r| r.len() == n) {
            return Err(StepError::from("ragged rows"));
        }
        let attempt = self.resets.saturating_sub(1);
        let mut out = Vec::new();
        for (i, row) in tokens.iter().enumerate() {
            if self.check_continuity && n == 1 {
                if let Some(l) = &self.last_logits[i] {
                    assert!(
                        l[row[0] as usize] > NEG_INF,
                        "token {} fed to sequence {i} = {:?}, where its logit was -inf",
                        row[0],
                        self.seqs[i]
                    );
                }
            }
            let base = self.seqs[i].len();
            self.seqs[i].extend_from_slice(row);
            self.histories.push(self.seqs[i].clone());
            let rows: Vec<Vec<f32>> = logit_positions
                .iter()
                .map(|&p| (self.script)(attempt, &self.seqs[i][..base + p + 1]))
                .collect();
            self.last_logits[i] =
                (logit_positions.last() == Some(&(n - 1))).then(|| rows.last().unwrap().clone());
            out.push(rows);
        }
        Ok(out)
    }

    fn reorder(&mut self, src: &[usize]) -> Result<(), StepError> {
        self.events.push(Event::Reorder(src.to_vec()));
        if !src.iter().all(|&i| i < self.seqs.len()) {
            return Err(StepError::from(format!(
                "reorder {src:?} of a batch of {}",
                self.seqs.len()
            )));
        }
        self.seqs = src.iter().map(|&i| self.seqs[i].clone()).collect();
        self.last_logits = src.iter().map(|&i| self.last_logits[i].clone()).collect();
        Ok(())
    }

    fn reset(&mut self) -> Result<(), StepError> {
        self.events.push(Event::Reset);
        self.resets += 1;
        self.seqs = vec![Vec::new()];
        self.last_logits = vec![None];
        Ok(())
    }
}

/// The tokens generated after a prompt of `plen`.
fn gen(h: &[u32], plen: usize) -> &[u32] {
    h.get(plen..).unwrap_or(&[])
}

// ---------------------------------------------------------------------------------------
// Pseudo-random scripts

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_history(h: &[u32], salt: u64) -> u64 {
    h.iter().fold(mix(salt), |acc, &t| mix(acc ^ t as u64))
}

/// Logits in [−3, 3) drawn from the history; with `holes`, about a quarter of the ids
/// after the prompt are −∞ (never the end token). The end token's logit grows with the
/// generated length, so that sequences end.
fn hashed_logits(h: &[u32], plen: usize, salt: u64, holes: bool) -> Vec<f32> {
    let base = hash_history(h, salt);
    let mut l: Vec<f32> = (0..N_VOCAB as u64)
        .map(|v| {
            let x = mix(base ^ v.wrapping_mul(0xD6E8_FEB8_6659_FD93));
            if holes && h.len() >= plen && x.is_multiple_of(4) {
                NEG_INF
            } else {
                (x >> 40) as f32 / (1u64 << 24) as f32 * 6.0 - 3.0
            }
        })
        .collect();
    l[EOT as usize] = -4.0 + 0.7 * h.len().saturating_sub(plen) as f32;
    l
}

/// Logits −rank of a history-dependent permutation: any two differ by at least 1, so
/// sampling at a tiny temperature is greedy decoding. The end token leads after a
/// history-dependent length.
fn ranked_logits(h: &[u32], plen: usize, salt: u64) -> Vec<f32> {
    let base = hash_history(h, salt);
    let mut order: Vec<usize> = (0..N_VOCAB).collect();
    order.sort_by_key(|&v| mix(base ^ v as u64));
    let mut l = vec![0.0; N_VOCAB];
    for (rank, &v) in order.iter().enumerate() {
        l[v] = -(rank as f32);
    }
    if h.len().saturating_sub(plen) >= 3 + (base % 6) as usize {
        l[EOT as usize] = 1.0;
    }
    l
}

// ---------------------------------------------------------------------------------------
// An independent beam search on whole histories (no cache, no reorder)

fn filters(o: &DecodeOptions) -> Vec<Box<dyn LogitFilter>> {
    let mut f: Vec<Box<dyn LogitFilter>> = vec![
        Box::new(SuppressTokens {
            ids: o.suppress_tokens.clone(),
        }),
        Box::new(SuppressBlank {
            ids: if o.suppress_blank {
                o.suppress_blank_tokens.clone()
            } else {
                vec![]
            },
        }),
    ];
    if !o.without_timestamps {
        f.push(Box::new(TimestampRules {
            eot: EOT,
            no_timestamps: NO_TS,
            timestamp_begin: TS0,
            max_initial_timestamp: o.max_initial_timestamp_index.map(|i| TS0 + i),
            first_step_rules: true,
        }));
    }
    f
}

/// Filtered log-probabilities after `generated`, recomputed from the whole history.
fn filtered_log_probs(
    script: &dyn Fn(&[u32]) -> Vec<f32>,
    p: &[u32],
    generated: &[u32],
    o: &DecodeOptions,
) -> Vec<f32> {
    let mut h = p.to_vec();
    h.extend_from_slice(generated);
    let mut l = script(&h);
    for f in filters(o) {
        f.apply(&mut l, generated);
    }
    log_softmax(&l)
}

/// CTranslate2's beam search written plainly: (tokens, cumulative, final score).
fn reference_beam(
    script: &dyn Fn(&[u32]) -> Vec<f32>,
    p: &[u32],
    o: &DecodeOptions,
    bo: BeamOptions,
) -> (Vec<u32>, f32, f32) {
    let b = bo.beam_size;
    let free = (o.max_length / 2).min(o.max_length - (p.len() - 1));
    let max_finished = (b as f32 * bo.patience).round() as usize;
    let mut beams: Vec<(Vec<u32>, f32)> = vec![(vec![], 0.0)];
    let mut finished: Vec<(Vec<u32>, f32)> = vec![];
    let mut top_finished = false;
    for step in 0..free {
        let mut cands: Vec<(f32, usize, usize, u32)> = vec![];
        for (i, (seq, score)) in beams.iter().enumerate() {
            let lp = filtered_log_probs(script, p, seq, o);
            for (v, &x) in lp.iter().enumerate() {
                cands.push((score + x, i * N_VOCAB + v, i, v as u32));
            }
        }
        cands.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap().then(x.1.cmp(&y.1)));
        cands.truncate(2 * b);
        let last = step + 1 == free;
        let mut next = vec![];
        let mut secondary = b;
        for k in 0..b {
            let (score, _, parent, tok) = cands[k];
            let mut pick = k;
            if tok == EOT || last {
                top_finished |= k == 0;
                let mut t = beams[parent].0.clone();
                if tok != EOT {
                    t.push(tok);
                }
                finished.push((t, score));
                if let Some(j) = (secondary..2 * b).find(|&j| cands[j].3 != EOT) {
                    pick = j;
                    secondary = j + 1;
                }
            }
            next.push(pick);
        }
        let stop = last
            || if bo.length_penalty == 0.0 {
                top_finished
            } else {
                finished.len() >= max_finished
            };
        if stop {
            break;
        }
        beams = next
            .iter()
            .map(|&j| {
                let (score, _, parent, tok) = cands[j];
                let mut s = beams[parent].0.clone();
                s.push(tok);
                (s, score)
            })
            .collect();
    }
    let mut best: Option<(Vec<u32>, f32, f32)> = None;
    for (t, cum) in finished {
        let s = cum / (t.len() as f32).powf(bo.length_penalty);
        if best.as_ref().is_none_or(|b| s > b.2) {
            best = Some((t, cum, s));
        }
    }
    best.unwrap()
}

/// Every token of `generated` is allowed by the filters applied to its own history.
fn obeys_filters(
    script: &dyn Fn(&[u32]) -> Vec<f32>,
    p: &[u32],
    generated: &[u32],
    o: &DecodeOptions,
) -> bool {
    (0..generated.len())
        .all(|i| filtered_log_probs(script, p, &generated[..i], o)[generated[i] as usize] > NEG_INF)
}

// ---------------------------------------------------------------------------------------
// Beam search

#[test]
fn beam_size_one_is_greedy_decoding() {
    for timestamps in [false, true] {
        for salt in 0..25u64 {
            let p = prompt(timestamps);
            let plen = p.len();
            let script = move |h: &[u32]| hashed_logits(h, plen, salt, !timestamps);
            let mut fake = Fake::simple(script);
            let greedy = greedy_decode(
                &mut SingleSequence(&mut fake),
                &p,
                &ids(),
                &opts(timestamps),
            )
            .unwrap();
            let mut fake = Fake::simple(script);
            let r =
                beam_search(&mut fake, &p, &ids(), &opts(timestamps), &beam(1, 1.0, 1.0)).unwrap();
            assert_eq!(r, greedy, "salt {salt}");
            assert!(fake.reorders().is_empty(), "greedy decoding never reorders");
            // Patience plays no part with one beam.
            let mut fake = Fake::simple(script);
            let r =
                beam_search(&mut fake, &p, &ids(), &opts(timestamps), &beam(1, 3.0, 1.0)).unwrap();
            assert_eq!(r, greedy);
        }
    }
}

/// after []: A 2.0, B 1.5; after [A]: C..I tie at 0, end −1; after [B] or two tokens:
/// end 10. Everything else −20.
fn better_than_greedy_script(h: &[u32]) -> Vec<f32> {
    let g = gen(h, 4);
    match g {
        [] => logits_with(-20.0, &[(A, 2.0), (B, 1.5)]),
        [A] => {
            let mut l = logits_with(-20.0, &[(EOT, -1.0)]);
            l[C as usize..=9].fill(0.0);
            l
        }
        _ => logits_with(-20.0, &[(EOT, 10.0)]),
    }
}

#[test]
fn beam_search_finds_a_better_sequence_than_greedy() {
    let p = prompt(false);
    let o = opts(false);
    let greedy = greedy_decode(
        &mut SingleSequence(&mut Fake::simple(better_than_greedy_script)),
        &p,
        &ids(),
        &o,
    )
    .unwrap();
    assert_eq!(
        greedy.tokens,
        vec![A, C],
        "greedy takes A, then the lowest of the tied ids"
    );

    let mut fake = Fake::simple(better_than_greedy_script).checked();
    let r = beam_search(&mut fake, &p, &ids(), &o, &beam(2, 1.0, 1.0)).unwrap();
    assert_eq!(r.tokens, vec![B]);

    let s = |g: &[u32]| {
        let mut h = p.clone();
        h.extend_from_slice(g);
        better_than_greedy_script(&h)
    };
    let lp_b = ref_lp(&blanked(s(&[])), B) + ref_lp(&s(&[B]), EOT);
    let lp_greedy = ref_lp(&blanked(s(&[])), A) + ref_lp(&s(&[A]), C) + ref_lp(&s(&[A, C]), EOT);
    assert!(
        (r.sum_logprob - lp_b).abs() < 1e-5 && (r.score - lp_b).abs() < 1e-5,
        "{r:?}"
    );
    assert!((r.avg_logprob - lp_b / 2.0).abs() < 1e-5);
    assert!((greedy.score - lp_greedy / 2.0).abs() < 1e-5);
    assert!(
        r.score > greedy.score + 0.2,
        "{} vs {}",
        r.score,
        greedy.score
    );

    // Step 1 keeps [A] and [B], both from the prompt. At step 2, [B, end] is the best
    // candidate and finishes; its slot goes to the third candidate [A, D], the second
    // slot keeps [A, C]: both continue sequence 0. Step 3 finishes both: 3 ≥ 2 hypotheses.
    assert_eq!(
        fake.events,
        vec![
            Event::Reset,
            Event::Step(vec![p.clone()], vec![0, 3]),
            Event::Reorder(vec![0, 0]),
            Event::Step(vec![vec![A], vec![B]], vec![0]),
            Event::Reorder(vec![0, 0]),
            Event::Step(vec![vec![D], vec![C]], vec![0]),
        ]
    );
}

#[test]
fn reorder_follows_the_parents_of_the_chosen_candidates() {
    // A case where the second beam's children take both slots.
    let script = |h: &[u32]| match gen(h, 4) {
        [] => logits_with(-20.0, &[(A, 2.0), (B, 1.9)]),
        [A] => logits_with(-20.0, &[(C, 0.0), (D, 0.0), (E, 0.0), (F, 0.0)]),
        [B] => logits_with(-20.0, &[(C, 5.0), (D, 4.9)]),
        [_, _] => logits_with(-20.0, &[(G, 5.0)]),
        _ => logits_with(-20.0, &[(EOT, 5.0)]),
    };
    let mut fake = Fake::simple(script).checked();
    let r = beam_search(
        &mut fake,
        &prompt(false),
        &ids(),
        &opts(false),
        &beam(2, 1.0, 1.0),
    )
    .unwrap();
    assert_eq!(r.tokens, vec![B, C, G]);
    assert_eq!(fake.reorders(), vec![vec![0, 0], vec![1, 1], vec![0, 1]]);
    assert_eq!(
        fake.fed_rows()[1..],
        [
            vec![vec![A], vec![B]],
            vec![vec![C], vec![D]],
            vec![vec![G], vec![G]]
        ]
    );
}

#[test]
fn beam_search_matches_a_search_on_whole_histories() {
    for (timestamps, holes) in [(false, true), (true, false)] {
        for b in [2usize, 3, 5] {
            for salt in 0..12u64 {
                let p = prompt(timestamps);
                let plen = p.len();
                let script = move |h: &[u32]| hashed_logits(h, plen, salt, holes);
                let mut o = opts(timestamps);
                o.max_length = 40;
                // Three beams need six candidates: leave all twelve timestamps allowed.
                if timestamps && b <= 3 {
                    o.max_initial_timestamp_index = Some(10);
                }
                let bo = beam(b, 1.0, 1.0);
                let mut fake = Fake::simple(script);
                fake.check_continuity = holes;
                let r = beam_search(&mut fake, &p, &ids(), &o, &bo).unwrap();
                let (tokens, cum, score) = reference_beam(&script, &p, &o, bo);
                assert_eq!(
                    r.tokens, tokens,
                    "timestamps {timestamps}, beams {b}, salt {salt}"
                );
                assert_eq!((r.sum_logprob as f32, r.score as f32), (cum, score));
                assert!(
                    fake.histories.iter().all(|h| !h[plen..].contains(&EOT)),
                    "the end token is never fed"
                );
                // Batch sizes: 1 for the prompt, then the beam size.
                assert!(fake.reorders().iter().all(|s| s.len() == b));
            }
        }
    }
}

#[test]
fn timestamp_rules_hold_inside_every_beam() {
    let mut with_timestamps = 0;
    for salt in 0..40u64 {
        let p = prompt(true);
        let plen = p.len();
        let script = move |h: &[u32]| hashed_logits(h, plen, salt, false);
        let mut o = opts(true);
        o.max_initial_timestamp_index = Some(5);
        let mut fake = Fake::simple(script);
        let r = beam_search(&mut fake, &p, &ids(), &o, &beam(2, 1.0, 1.0)).unwrap();
        // Every beam was filtered on its own history: each token it was fed was allowed
        // there, so the first is a timestamp no later than <|0.10|>, timestamps come in
        // pairs and never decrease.
        for h in &fake.histories[1..] {
            let g = &h[plen..];
            assert!(obeys_filters(&script, &p, g, &o), "salt {salt}: {g:?}");
            assert!((TS0..=TS0 + 5).contains(&g[0]));
        }
        assert!(obeys_filters(&script, &p, &r.tokens, &o));
        with_timestamps += r.tokens.iter().filter(|&&t| t > TS0).count();
    }
    assert!(
        with_timestamps > 40,
        "the scripts exercise the timestamp rules"
    );
}

/// after []: A 2, B 1.5; after one token: end 3, C 1; C is followed by the certain chain
/// D E F G, then the end.
fn patience_script(h: &[u32]) -> Vec<f32> {
    match gen(h, 4) {
        [] => logits_with(-20.0, &[(A, 2.0), (B, 1.5)]),
        [_] => logits_with(-20.0, &[(EOT, 3.0), (C, 1.0)]),
        [.., C] => logits_with(-20.0, &[(D, 10.0)]),
        [.., D] => logits_with(-20.0, &[(E, 10.0)]),
        [.., E] => logits_with(-20.0, &[(F, 10.0)]),
        [.., F] => logits_with(-20.0, &[(G, 10.0)]),
        _ => logits_with(-20.0, &[(EOT, 10.0)]),
    }
}

/// Cumulative log-probability of `g` followed by the end token under [`patience_script`].
fn patience_cum(g: &[u32]) -> f64 {
    let p = prompt(false);
    let at = |i: usize| {
        let mut h = p.clone();
        h.extend_from_slice(&g[..i]);
        let l = patience_script(&h);
        if i == 0 {
            blanked(l)
        } else {
            l
        }
    };
    (0..g.len()).map(|i| ref_lp(&at(i), g[i])).sum::<f64>() + ref_lp(&at(g.len()), EOT)
}

#[test]
fn patience_lets_more_hypotheses_finish() {
    let p = prompt(false);
    let o = opts(false);
    let short = patience_cum(&[A]);
    let long = patience_cum(&[A, C, D, E, F, G]);
    // Hand-computed: [A] ≈ −0.60 over 1 token; [A C D E F G] ≈ −2.60 over 6 tokens.
    assert!(short > -0.61 && short < -0.59 && long / 6.0 > short);

    // Patience 1: [A, end] and [B, end] are the two best candidates at step 2; two
    // hypotheses have finished, the search stops.
    let mut fake = Fake::simple(patience_script);
    let r = beam_search(&mut fake, &p, &ids(), &o, &beam(2, 1.0, 1.0)).unwrap();
    assert_eq!(r.tokens, vec![A]);
    assert!((r.score - short).abs() < 1e-5);
    assert_eq!(fake.fed_rows().len(), 2, "prompt and step 1 only");

    // Patience 2: four must finish; both slots continue with [A C], [B C] and the long one
    // wins after length normalisation.
    let mut fake = Fake::simple(patience_script);
    let r = beam_search(&mut fake, &p, &ids(), &o, &beam(2, 2.0, 1.0)).unwrap();
    assert_eq!(r.tokens, vec![A, C, D, E, F, G]);
    assert!(
        (r.score - long / 6.0).abs() < 1e-5,
        "{} vs {}",
        r.score,
        long / 6.0
    );
    assert!((r.avg_logprob - long / 7.0).abs() < 1e-5);

    // round(2 × 0.75) = 2 (halves round away from zero), round(2 × 1.25) = 3.
    let run = |patience: f32| {
        beam_search(
            &mut Fake::simple(patience_script),
            &p,
            &ids(),
            &o,
            &beam(2, patience, 1.0),
        )
        .unwrap()
        .tokens
    };
    assert_eq!(run(0.75), vec![A]);
    assert_eq!(run(1.25), vec![A, C, D, E, F, G]);
    assert_eq!(run(0.25), vec![A], "round(0.5) = 1 hypothesis");
    let err = beam_search(
        &mut Fake::simple(patience_script),
        &p,
        &ids(),
        &o,
        &beam(2, 0.2, 1.0),
    )
    .unwrap_err();
    assert!(
        matches!(Some(&err), Some(DecodeError::BadBeamOptions { .. })),
        "round(0.4) = 0 hypotheses: {err}"
    );
}

#[test]
fn length_penalty_normalises_the_final_scores() {
    let p = prompt(false);
    let o = opts(false);
    let short = patience_cum(&[A]);
    let long = patience_cum(&[A, C, D, E, F, G]);

    // Penalty 0.5: −0.60 / 1 beats −2.60 / √6 ≈ −1.06, although the search runs on until
    // four hypotheses finished.
    let mut fake = Fake::simple(patience_script);
    let r = beam_search(&mut fake, &p, &ids(), &o, &beam(2, 2.0, 0.5)).unwrap();
    assert_eq!(r.tokens, vec![A]);
    assert!((r.score - short).abs() < 1e-5);
    assert!(fake.fed_rows().len() > 3);
    assert!((long / 6f64.sqrt()) < short);

    // Penalty 0: scores are raw sums and the search exits as soon as the best candidate
    // finishes (step 2), whatever the patience.
    let mut fake = Fake::simple(patience_script);
    let r = beam_search(&mut fake, &p, &ids(), &o, &beam(2, 2.0, 0.0)).unwrap();
    assert_eq!(r.tokens, vec![A]);
    assert!((r.score - short).abs() < 1e-5);
    assert!(
        (r.avg_logprob - short / 2.0).abs() < 1e-5,
        "score × len⁰ / (len + 1)"
    );
    assert_eq!(fake.fed_rows().len(), 2);

    // Penalty 2 on the same hypotheses: −2.60 / 36 beats −0.60 / 1.
    let r = beam_search(
        &mut Fake::simple(patience_script),
        &p,
        &ids(),
        &o,
        &beam(2, 2.0, 2.0),
    )
    .unwrap();
    assert_eq!(r.tokens, vec![A, C, D, E, F, G]);
    assert!((r.score - long / 36.0).abs() < 1e-5);
    assert!(
        (r.avg_logprob - long / 7.0).abs() < 1e-5,
        "score × len² / (len + 1)"
    );
}

#[test]
fn max_length_finishes_every_beam() {
    let p = prompt(false);
    let o = DecodeOptions {
        max_length: 10,
        ..opts(false)
    };
    let script = |_: &[u32]| logits_with(0.0, &[(A, 5.0), (B, 4.0), (EOT, -5.0)]);
    let mut fake = Fake::simple(script);
    let r = beam_search(&mut fake, &p, &ids(), &o, &beam(3, 1.0, 1.0)).unwrap();
    // min(10 / 2, 10 − 3) = 5 tokens, the last not fed.
    assert_eq!(r.tokens, vec![A; 5]);
    assert!(
        fake.seqs.iter().all(|s| s.len() == p.len() + 4),
        "{:?}",
        fake.seqs
    );
    let raw = script(&[]);
    let cum = ref_lp(&blanked(raw.clone()), A) + 4.0 * ref_lp(&raw, A);
    assert!((r.score - cum / 5.0).abs() < 1e-5);
    assert!((r.avg_logprob - cum / 6.0).abs() < 1e-5);
}

#[test]
fn end_token_finishes_hypotheses_and_is_scored_but_not_returned() {
    let p = prompt(false);
    // A and B tie at step 1; at step 2 both beams' best candidate is the end token.
    let script = |h: &[u32]| match gen(h, 4) {
        [] => logits_with(-20.0, &[(A, 1.0), (B, 1.0)]),
        [A] => logits_with(-20.0, &[(EOT, 2.0), (C, 0.0)]),
        [B] => logits_with(-20.0, &[(EOT, 0.5), (C, 0.0)]),
        _ => logits_with(-20.0, &[(EOT, 20.0)]),
    };
    let mut fake = Fake::simple(script).checked();
    let r = beam_search(&mut fake, &p, &ids(), &opts(false), &beam(2, 1.0, 1.0)).unwrap();
    let s = |g: &[u32]| {
        let mut h = p.clone();
        h.extend_from_slice(g);
        script(&h)
    };
    let cum = ref_lp(&blanked(s(&[])), A) + ref_lp(&s(&[A]), EOT);
    assert_eq!(r.tokens, vec![A]);
    assert!(
        (r.sum_logprob - cum).abs() < 1e-5,
        "the end token's log-probability counts"
    );
    // Step 2 candidates: [A end], [B end], [B C], [A C]: both ends finish at once.
    assert_eq!(fake.fed_rows().len(), 2);
    assert!(fake.fed_rows().iter().flatten().all(|row| row[0] != EOT));
}

#[test]
fn no_speech_probability_comes_from_the_sot_position() {
    let ctx = vec![PREV, C, B, SOT, EN, TRANSCRIBE, NO_TS];
    let sot_logits = logits_with(0.0, &[(NO_SPEECH, 3.0), (A, 1.0)]);
    let sl = sot_logits.clone();
    let script = move |h: &[u32]| match h.len() {
        4 => sl.clone(),
        7 => logits_with(0.0, &[(NO_SPEECH, 9.0), (A, 5.0)]),
        _ => logits_with(0.0, &[(EOT, 9.0)]),
    };
    let o = DecodeOptions {
        suppress_tokens: vec![NO_SPEECH],
        ..opts(false)
    };
    let mut fake = Fake::simple(script);
    let r = beam_search(&mut fake, &ctx, &ids(), &o, &BeamOptions::default()).unwrap();
    assert!((r.no_speech_prob as f64 - ref_lp(&sot_logits, NO_SPEECH).exp()).abs() < 1e-6);
    assert_eq!(fake.events[1], Event::Step(vec![ctx.clone()], vec![3, 6]));
    assert_eq!(r.tokens, vec![A]);
}

#[test]
fn forced_prefix_discards_secondary_end_candidates_at_the_first_free_step() {
    // Prefix [A]; without blank suppression the end token is the second candidate at the
    // first free step. CTranslate2 turns it into token 0 scored −1e10 instead of letting
    // the one-token hypothesis [A] finish.
    let p = vec![SOT, EN, TRANSCRIBE, NO_TS, A];
    let o = DecodeOptions {
        suppress_blank: false,
        ..opts(false)
    };
    let script = |h: &[u32]| match gen(h, 5) {
        [] => logits_with(-20.0, &[(C, 3.0), (EOT, 2.9), (D, 2.8), (E, 1.0)]),
        _ => logits_with(-20.0, &[(EOT, 10.0)]),
    };
    let mut fake = Fake::simple(script);
    let r = beam_search(&mut fake, &p, &ids(), &o, &beam(2, 1.0, 1.0)).unwrap();
    assert_eq!(r.tokens, vec![C], "the prefix is not returned");
    assert_eq!(fake.fed_rows()[1], vec![vec![C], vec![BLANK]]);
    assert_eq!(fake.reorders()[0], vec![0, 0]);
    let cum = ref_lp(&script(&p), C) + ref_lp(&script(&[p.clone(), vec![C]].concat()), EOT);
    // The forced prefix counts in the length: CTranslate2 returns it with the hypothesis.
    assert!(
        (r.score - cum / 2.0).abs() < 1e-5,
        "{} vs {}",
        r.score,
        cum / 2.0
    );
    assert!((r.avg_logprob - cum / 3.0).abs() < 1e-5);

    // Greedy decoding scores the same hypothesis the same way.
    let g = greedy_decode(
        &mut SingleSequence(&mut Fake::simple(script)),
        &p,
        &ids(),
        &o,
    )
    .unwrap();
    assert_eq!(
        (g.tokens.clone(), g.score as f32),
        (r.tokens.clone(), r.score as f32)
    );
}

#[test]
fn bad_beam_options_and_model_answers_are_errors() {
    let p = prompt(false);
    let o = opts(false);
    let ok = |_: &[u32]| logits_with(0.0, &[(EOT, 5.0)]);
    for bo in [
        beam(0, 1.0, 1.0),
        beam(17, 1.0, 1.0),
        beam(2, 0.0, 1.0),
        beam(2, 1.0, f32::NAN),
    ] {
        let err = beam_search(&mut Fake::simple(ok), &p, &ids(), &o, &bo).unwrap_err();
        assert!(
            matches!(Some(&err), Some(DecodeError::BadBeamOptions { .. })),
            "{bo:?}: {err}"
        );
    }

    /// Answers every step with one sequence too many.
    struct Extra;
    impl BatchStepModel for Extra {
        fn step(
            &mut self,
            tokens: &[Vec<u32>],
            pos: &[usize],
        ) -> Result<Vec<Vec<Vec<f32>>>, StepError> {
            Ok(vec![vec![vec![0.0; N_VOCAB]; pos.len()]; tokens.len() + 1])
        }
        fn reorder(&mut self, _: &[usize]) -> Result<(), StepError> {
            Ok(())
        }
        fn reset(&mut self) -> Result<(), StepError> {
            Ok(())
        }
    }
    let err = beam_search(&mut Extra, &p, &ids(), &o, &BeamOptions::default()).unwrap_err();
    assert!(
        matches!(
            Some(&err),
            Some(DecodeError::BatchSize {
                expected: 1,
                got: 2
            })
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Sampling

#[test]
fn sampling_at_a_tiny_temperature_is_greedy_decoding() {
    for timestamps in [false, true] {
        for salt in 0..20u64 {
            let p = prompt(timestamps);
            let plen = p.len();
            let script = move |h: &[u32]| ranked_logits(h, plen, salt);
            let o = opts(timestamps);
            let greedy = greedy_decode(
                &mut SingleSequence(&mut Fake::simple(script)),
                &p,
                &ids(),
                &o,
            )
            .unwrap();
            assert!(!greedy.tokens.is_empty());
            let r =
                sample_decode(&mut Fake::simple(script), &p, &ids(), &o, 0.01, 3, salt).unwrap();
            assert_eq!(r, greedy, "salt {salt}");
            // Temperature 0 is the argmax, as in CTranslate2.
            let r = sample_decode(&mut Fake::simple(script), &p, &ids(), &o, 0.0, 5, salt).unwrap();
            assert_eq!(r, greedy);
        }
    }
}

#[test]
fn sampling_is_deterministic_for_a_seed() {
    let p = prompt(true);
    let script = |h: &[u32]| hashed_logits(h, 3, 7, false);
    let run = |seed: u64| {
        let mut fake = Fake::simple(script);
        let r = sample_decode(&mut fake, &p, &ids(), &opts(true), 1.0, 5, seed).unwrap();
        (r, fake.events)
    };
    let (a, ev_a) = run(42);
    let (b, ev_b) = run(42);
    assert_eq!(a, b);
    assert_eq!(ev_a, ev_b);
    let distinct: std::collections::HashSet<Vec<u32>> = (0..10).map(|s| run(s).0.tokens).collect();
    assert!(
        distinct.len() >= 3,
        "different seeds draw different samples: {distinct:?}"
    );
}

#[test]
fn sampled_frequencies_follow_the_tempered_softmax() {
    let p = prompt(false);
    let first = logits_with(NEG_INF, &[(A, 1.0), (B, 0.0), (C, -1.0), (D, 0.5)]);
    let f = first.clone();
    let script = move |h: &[u32]| match gen(h, 4) {
        [] => f.clone(),
        _ => logits_with(NEG_INF, &[(EOT, 0.0)]),
    };
    const N: usize = 4000;
    for temperature in [0.7f32, 1.5] {
        let mut counts = [0usize; N_VOCAB];
        for seed in 0..N as u64 {
            let r = sample_decode(
                &mut Fake::simple(script.clone()),
                &p,
                &ids(),
                &opts(false),
                temperature,
                1,
                seed,
            )
            .unwrap();
            assert_eq!(r.tokens.len(), 1);
            let t = r.tokens[0];
            counts[t as usize] += 1;
            // The score is the temperature-1 log-probability (the end token's is 0).
            assert!((r.sum_logprob - ref_lp(&first, t)).abs() < 1e-5);
        }
        let scaled: Vec<f32> = first.iter().map(|&x| x / temperature).collect();
        for t in [A, B, C, D] {
            let expected = ref_lp(&scaled, t).exp();
            let freq = counts[t as usize] as f64 / N as f64;
            // 4.5 standard deviations of a binomial proportion.
            let tol = 4.5 * (expected * (1.0 - expected) / N as f64).sqrt();
            assert!(
                (freq - expected).abs() < tol,
                "T {temperature}, token {t}: {freq} vs {expected} ± {tol}"
            );
        }
        assert_eq!(counts.iter().sum::<usize>(), N);
    }
}

#[test]
fn best_of_returns_the_best_scoring_sample() {
    let p = prompt(false);
    // A and B equally likely; A continues among three equal tokens, B ends:
    // [B] scores ln ½ ≈ −0.69, [A x] (ln ½ + ln ⅓) / 2 ≈ −0.90.
    let script = |h: &[u32]| match gen(h, 4) {
        [] => logits_with(NEG_INF, &[(A, 0.0), (B, 0.0)]),
        [A] => logits_with(NEG_INF, &[(C, 0.0), (D, 0.0), (E, 0.0)]),
        _ => logits_with(NEG_INF, &[(EOT, 0.0)]),
    };
    let mut fake = Fake::simple(script);
    let r = sample_decode(&mut fake, &p, &ids(), &opts(false), 1.0, 20, 3).unwrap();
    assert_eq!(r.tokens, vec![B]);
    assert!((r.score - 0.5f64.ln()).abs() < 1e-6);
    // The prompt is expanded to 20 sequences, then finished samples leave the batch.
    let reorders = fake.reorders();
    assert_eq!(reorders[0], vec![0; 20]);
    for w in reorders.windows(2) {
        assert!(w[1].windows(2).all(|x| x[0] < x[1]) && w[1].len() < w[0].len());
    }

    // Whatever the order the samples come in, the best one is returned (no B among 20
    // samples has probability 2⁻²⁰ per seed).
    for seed in 0..30 {
        let r = sample_decode(
            &mut Fake::simple(script),
            &p,
            &ids(),
            &opts(false),
            1.0,
            20,
            seed,
        )
        .unwrap();
        assert_eq!(r.tokens, vec![B], "seed {seed}");
    }

    let singles: std::collections::HashSet<usize> = (0..40)
        .map(|s| {
            sample_decode(
                &mut Fake::simple(script),
                &p,
                &ids(),
                &opts(false),
                1.0,
                1,
                s,
            )
            .unwrap()
            .tokens
            .len()
        })
        .collect();
    assert_eq!(
        singles,
        [1, 2].into_iter().collect(),
        "single samples take both branches"
    );

    for (t, n) in [(-0.5f32, 5usize), (f32::NAN, 5), (1.0, 0)] {
        let err = sample_decode(&mut Fake::simple(script), &p, &ids(), &opts(false), t, n, 0)
            .unwrap_err();
        assert!(
            matches!(Some(&err), Some(DecodeError::BadSampling { .. })),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Temperature fallback

/// Token 9 spells the same word as token 1.
const WORDS: [&str; 10] = [
    " ", " hello", " quick", " brown", " fox", " jumps", " over", " lazy", " dog", " hello",
];

fn text_of(tokens: &[u32]) -> String {
    tokens
        .iter()
        .filter(|&&t| t < EOT)
        .map(|&t| WORDS[t as usize])
        .collect()
}

/// Logits choosing uniformly among `among`, `rest` elsewhere.
fn uniform(among: &[u32], rest: f32) -> Vec<f32> {
    let mut l = vec![rest; N_VOCAB];
    for &t in among {
        l[t as usize] = 0.0;
    }
    l
}

/// A window of `n` tokens each drawn uniformly from `among`, then the end token.
fn window(g: &[u32], n: usize, among: &[u32], rest: f32) -> Vec<f32> {
    if g.len() < n {
        uniform(among, rest)
    } else {
        uniform(&[EOT], rest)
    }
}

const EIGHT: [u32; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

/// Per attempt: `(steps, tokens to draw among)`; `no_speech` is the no-speech logit at
/// `<|startoftranscript|>` (against 0 elsewhere). Other tokens get −40 (about e⁻⁴⁰ as
/// likely, so that beams always find enough finite candidates).
fn attempts_script(
    plan: Vec<(usize, Vec<u32>)>,
    no_speech: f32,
) -> impl Fn(usize, &[u32]) -> Vec<f32> {
    attempts_script_rest(plan, no_speech, -40.0)
}

/// [`attempts_script`] with `rest` for the other tokens.
fn attempts_script_rest(
    plan: Vec<(usize, Vec<u32>)>,
    no_speech: f32,
    rest: f32,
) -> impl Fn(usize, &[u32]) -> Vec<f32> {
    move |attempt, h| {
        if h.len() == 1 {
            return logits_with(0.0, &[(NO_SPEECH, no_speech)]);
        }
        let (n, among) = &plan[attempt.min(plan.len() - 1)];
        window(gen(h, 4), *n, among, rest)
    }
}

fn fallback(beam_size: usize) -> FallbackOptions {
    FallbackOptions {
        beam: BeamOptions {
            beam_size,
            ..BeamOptions::default()
        },
        ..FallbackOptions::default()
    }
}

#[test]
fn compression_ratio_failure_retries_at_the_next_temperature() {
    let repetitive = text_of(&[A; 40]);
    assert!(compression_ratio(repetitive.trim()) > 2.4);
    assert!(compression_ratio(text_of(&[A, A]).trim()) < 2.4);
    for beam_size in [1, 5] {
        let script = attempts_script(vec![(40, vec![A]), (2, vec![A])], 0.0);
        let mut fake = Fake::new(script);
        let (r, t) = decode_with_fallback(
            &mut fake,
            &prompt(false),
            &ids(),
            &opts(false),
            &fallback(beam_size),
            &text_of,
        )
        .unwrap();
        assert_eq!((r.tokens, t), (vec![A, A], 0.2), "beam size {beam_size}");
        assert_eq!(fake.resets, 2, "the cache is reset before each try");
        assert!(r.avg_logprob > -1e-6);
    }
}

#[test]
fn a_likely_silent_window_stops_the_fallback() {
    // Attempt 0: three tokens among eight: avg = 3 ln ⅛ / 4 ≈ −1.56 < −1.
    let plan = vec![(3, EIGHT.to_vec()), (1, vec![A])];
    let expected_avg = 3.0 * (1.0f64 / 8.0).ln() / 4.0;

    let mut fake = Fake::new(attempts_script(plan.clone(), 10.0));
    let (r, t) = decode_with_fallback(
        &mut fake,
        &prompt(false),
        &ids(),
        &opts(false),
        &fallback(5),
        &text_of,
    )
    .unwrap();
    assert!(r.no_speech_prob > 0.99);
    assert_eq!(
        (r.tokens.len(), t, fake.resets),
        (3, 0.0, 1),
        "silence: no retry"
    );
    assert!((r.avg_logprob - expected_avg).abs() < 1e-5);

    // Speech likely: the low average log-probability triggers a retry.
    let mut fake = Fake::new(attempts_script(plan, 0.0));
    let (r, t) = decode_with_fallback(
        &mut fake,
        &prompt(false),
        &ids(),
        &opts(false),
        &fallback(5),
        &text_of,
    )
    .unwrap();
    assert!(r.no_speech_prob < 0.1);
    assert_eq!((r.tokens, t, fake.resets), (vec![A], 0.2, 2));

    // Silence only excuses a low log-probability, not a repetitive text.
    let plan = vec![(40, vec![A]), (1, vec![B])];
    let mut fake = Fake::new(attempts_script(plan, 10.0));
    let (r, t) = decode_with_fallback(
        &mut fake,
        &prompt(false),
        &ids(),
        &opts(false),
        &fallback(5),
        &text_of,
    )
    .unwrap();
    assert_eq!((r.tokens, t), (vec![B], 0.2));
}

#[test]
fn when_every_temperature_fails_the_best_average_under_the_ratio_limit_wins() {
    // avg log-probabilities: 0 (repetitive), −1.56, −1.07, −0.66 (repetitive), −1.76,
    // 0 (repetitive). Under the ratio limit the best is attempt 2: its result is returned
    // with the last temperature, as faster-whisper reports it.
    let plan = vec![
        (40, vec![A]),
        (3, EIGHT.to_vec()),
        (2, vec![1, 2, 3, 4, 5]),
        (20, vec![A, 9]), // both " hello": repetitive, avg 20 ln ½ / 21 ≈ −0.66
        (4, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (40, vec![A]),
    ];
    let mut fake = Fake::new(attempts_script(plan, 0.0));
    let (r, t) = decode_with_fallback(
        &mut fake,
        &prompt(false),
        &ids(),
        &opts(false),
        &fallback(5),
        &text_of,
    )
    .unwrap();
    assert_eq!(fake.resets, 6);
    assert_eq!((r.tokens.len(), t), (2, 1.0));
    assert!(
        (r.avg_logprob - 2.0 * 0.2f64.ln() / 3.0).abs() < 1e-5,
        "{}",
        r.avg_logprob
    );

    // Every try repetitive: the highest average among all, the first of equals (40 A).
    // Other tokens at −∞ make every average exactly 0.
    let plan = vec![(40, vec![A]), (20, vec![A]), (30, vec![A])];
    let fb = FallbackOptions {
        temperatures: vec![0.0, 0.5, 1.0],
        log_prob_threshold: Some(1.0), // nothing passes
        ..fallback(1)
    };
    let mut fake = Fake::new(attempts_script_rest(plan.clone(), 0.0, NEG_INF));
    let (r, t) = decode_with_fallback(
        &mut fake,
        &prompt(false),
        &ids(),
        &opts(false),
        &fb,
        &text_of,
    )
    .unwrap();
    assert_eq!((r.tokens.len(), t, r.avg_logprob), (40, 1.0, 0.0));

    // Without a ratio limit the first try passes on its log-probability alone.
    let fb = FallbackOptions {
        compression_ratio_threshold: None,
        ..fallback(5)
    };
    let (r, t) = decode_with_fallback(
        &mut Fake::new(attempts_script(plan, 0.0)),
        &prompt(false),
        &ids(),
        &opts(false),
        &fb,
        &text_of,
    )
    .unwrap();
    assert_eq!((r.tokens.len(), t), (40, 0.0));

    let fb = FallbackOptions {
        temperatures: vec![],
        ..fallback(5)
    };
    let err = decode_with_fallback(
        &mut Fake::new(attempts_script(vec![(1, vec![A])], 0.0)),
        &prompt(false),
        &ids(),
        &opts(false),
        &fb,
        &text_of,
    )
    .unwrap_err();
    assert!(matches!(Some(&err), Some(DecodeError::NoTemperatures)));
}

/// `FallbackOptions::check` refuses, before any window, every setting some window could
/// reach: sampling settings only where a temperature above 0 would sample.
#[test]
fn fallback_options_are_checked_for_every_temperature_they_list() {
    let base = FallbackOptions::default();
    base.check().expect("faster-whisper's defaults are usable");
    let with = |f: &dyn Fn(&mut FallbackOptions)| {
        let mut o = base.clone();
        f(&mut o);
        o.check()
    };
    let err = with(&|o| o.best_of = 0).unwrap_err();
    assert!(
        matches!(err, DecodeError::BadSampling { best_of: 0, .. }),
        "{err}"
    );
    // Beam search only: best_of is never read.
    with(&|o| {
        o.temperatures = vec![0.0];
        o.best_of = 0;
    })
    .expect("best_of is unused without a temperature above 0");
    let err = with(&|o| o.temperatures = vec![0.0, f32::INFINITY]).unwrap_err();
    assert!(matches!(err, DecodeError::BadSampling { .. }), "{err}");
    let err = with(&|o| o.temperatures.clear()).unwrap_err();
    assert!(matches!(err, DecodeError::NoTemperatures), "{err}");
    let err = with(&|o| o.beam.beam_size = MAX_HYPOTHESES + 1).unwrap_err();
    assert!(matches!(err, DecodeError::BadBeamOptions { .. }), "{err}");
    assert!(
        err.to_string().contains("the beam size must be 1 to"),
        "{err}"
    );

    // The fallback itself refuses them before its first try, though that try (beam
    // search, which finishes at once here) would never reach the sampling settings.
    let mut fake = Fake::simple(|_: &[u32]| logits_with(0.0, &[(EOT, 5.0)]));
    let fb = FallbackOptions {
        best_of: 0,
        ..fallback(5)
    };
    let err = decode_with_fallback(
        &mut fake,
        &prompt(false),
        &ids(),
        &opts(false),
        &fb,
        &text_of,
    )
    .unwrap_err();
    assert!(
        matches!(err, DecodeError::BadSampling { best_of: 0, .. }),
        "{err}"
    );
    assert_eq!(fake.resets, 0, "the model never ran");
}
