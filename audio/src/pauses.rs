//! Pauses in a recording: runs of frames whose short-time energy lies well below the
//! speech level around them ([`find_pauses`]). The Whisper pipeline moves segment
//! boundaries onto them.

/// Energy frames per second: a 10-ms hop, the hop of Whisper's mel frames.
pub const FRAMES_PER_SECOND: usize = 100;
/// Quiet frames of the silence in which nothing at all is recorded are put at this level
/// (dB relative to full scale) rather than minus infinity.
pub const SILENCE_DB: f32 = -100.0;
/// A run of quiet audio, in seconds from the start of the recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pause {
    /// First quiet instant.
    pub start: f64,
    /// Where sound resumes.
    pub end: f64,
}

impl Pause {
    /// Length in seconds.
    pub fn duration(&self) -> f64 {
        self.end - self.start
    }

    /// Seconds from `t` to the nearest instant of the pause (0 inside it).
    pub fn distance_to(&self, t: f64) -> f64 {
        (self.start - t).max(t - self.end).max(0.0)
    }
}

/// How quiet and how long a pause is.
#[derive(Debug, Clone, PartialEq)]
pub struct PauseOptions {
    /// Shortest pause, seconds (stop closures inside words last up to about 0.15 s).
    pub min_duration: f64,
    /// The speech level and noise floor of a frame are measured over this many seconds
    /// on each side of it, so that they follow changes of speaker, microphone or room.
    pub context: f64,
    /// Percentile (0-1) of the frame levels taken as the speech level.
    pub level_percentile: f64,
    /// Percentile (0-1) of the frame levels taken as the noise floor (speech has more
    /// than this share of pauses, gaps and closures).
    pub floor_percentile: f64,
    /// A frame this many dB below the speech level is quiet...
    pub depth_db: f32,
    /// ...and so is one less than this many dB above the noise floor...
    pub floor_margin_db: f32,
    /// ...but never one closer than this many dB to the speech level (audio without
    /// pauses, or too noisy to tell them, has none).
    pub min_contrast_db: f32,
    /// Louder runs at most this long (seconds) between quiet frames are clicks, not
    /// speech.
    pub max_click: f64,
}

impl Default for PauseOptions {
    fn default() -> Self {
        PauseOptions {
            min_duration: 0.25,
            context: 15.0,
            level_percentile: 0.90,
            floor_percentile: 0.20,
            depth_db: 35.0,
            floor_margin_db: 6.0,
            min_contrast_db: 15.0,
            max_click: 0.03,
        }
    }
}

/// Samples per energy frame at `sample_rate`, or `None` below 100 Hz.
fn hop(sample_rate: u32) -> Option<usize> {
    let h = sample_rate as usize / FRAMES_PER_SECOND;
    (h > 0).then_some(h)
}

/// Level in dB (full scale = 0) of every 10-ms frame: frame `i` covers samples
/// `i·hop .. (i+1)·hop` and its energy is the mean square over that frame and its two
/// neighbours (a 30-ms window), so single frames between syllables do not read as quiet.
/// Empty for an empty signal or a rate below 100 Hz.
pub fn frame_levels_db(pcm: &[f32], sample_rate: u32) -> Vec<f32> {
    let mut meter = LevelMeter::new(sample_rate);
    meter.push(pcm);
    meter.finish()
}

/// [`frame_levels_db`] of a signal that arrives in pieces: the same bits, holding only
/// one running sum per 10-ms frame (1.4 MB an hour) rather than the signal.
#[derive(Debug, Clone)]
pub struct LevelMeter {
    hop: Option<usize>,
    /// Running sum of the squares, in f64 so that long recordings keep their precision.
    acc: f64,
    /// Samples pushed.
    len: usize,
    /// The running sum at every multiple of `hop` samples (index 0: before the first).
    at_hops: Vec<f64>,
}

impl LevelMeter {
    /// A meter for a signal at `sample_rate` (levels are empty below 100 Hz).
    pub fn new(sample_rate: u32) -> Self {
        LevelMeter {
            hop: hop(sample_rate),
            acc: 0.0,
            len: 0,
            at_hops: vec![0.0],
        }
    }

    /// Adds the next samples of the signal.
    pub fn push(&mut self, samples: &[f32]) {
        let Some(hop) = self.hop else {
            return;
        };
        for &x in samples {
            self.acc += f64::from(x) * f64::from(x);
            self.len += 1;
            if self.len.is_multiple_of(hop) {
                self.at_hops.push(self.acc);
            }
        }
    }

    /// The level of every frame of the signal pushed.
    pub fn finish(self) -> Vec<f32> {
        let Some(hop) = self.hop else {
            return Vec::new();
        };
        let len = self.len;
        let n = len.div_ceil(hop);
        // Frame edges are multiples of `hop` except the signal's end.
        let prefix = |i: usize| {
            if i == len {
                self.acc
            } else {
                self.at_hops[i / hop]
            }
        };
        (0..n)
            .map(|i| {
                let a = (i * hop).saturating_sub(hop);
                let b = ((i + 2) * hop).min(len);
                let energy = (prefix(b) - prefix(a)) / (b - a).max(1) as f64;
                let db = 10.0 * energy.max(1e-10).log10();
                (db as f32).max(SILENCE_DB)
            })
            .collect()
    }
}

/// Value at percentile `p` (0-1, nearest rank) of `values`, reordering them.
fn percentile(values: &mut [f32], p: f64) -> f32 {
    if values.is_empty() {
        return SILENCE_DB;
    }
    let k = ((values.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
    *values.select_nth_unstable_by(k, f32::total_cmp).1
}

/// The level below which each frame counts as quiet: `depth_db` below the local speech
/// level or `floor_margin_db` above the local noise floor, whichever is higher, but at
/// least `min_contrast_db` below the speech level. Levels are measured once per second
/// over `context` seconds on each side.
pub fn quiet_thresholds(levels: &[f32], opts: &PauseOptions) -> Vec<f32> {
    let n = levels.len();
    let block = FRAMES_PER_SECOND;
    let context = (opts.context.max(0.0) * FRAMES_PER_SECOND as f64) as usize;
    let mut out = Vec::with_capacity(n);
    let mut scratch = Vec::new();
    let mut b = 0;
    while b < n {
        let centre = b + block / 2;
        let lo = centre.saturating_sub(context).min(n - 1);
        let hi = (centre + context + 1).min(n).max(lo + 1);
        scratch.clear();
        scratch.extend_from_slice(&levels[lo..hi]);
        let level = percentile(&mut scratch, opts.level_percentile);
        let floor = percentile(&mut scratch, opts.floor_percentile);
        let threshold = (level - opts.depth_db)
            .max(floor + opts.floor_margin_db)
            .min(level - opts.min_contrast_db);
        let end = (b + block).min(n);
        out.extend(std::iter::repeat_n(threshold, end - b));
        b = end;
    }
    out
}

/// Runs of `true` in `flags` as `(first, past_last)` frame ranges.
fn runs(flags: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < flags.len() {
        if flags[i] {
            let j = flags[i..]
                .iter()
                .position(|&q| !q)
                .map_or(flags.len(), |k| i + k);
            out.push((i, j));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Pauses of 16-kHz (or any rate ≥ 100 Hz) mono samples, in order, each at least
/// `opts.min_duration` long. A pause's edges are accurate to one frame (10 ms): the
/// 30-ms energy window lets sound leak one frame into each side of a pause.
pub fn find_pauses(pcm: &[f32], sample_rate: u32, opts: &PauseOptions) -> Vec<Pause> {
    pauses_from_levels(&frame_levels_db(pcm, sample_rate), opts)
}

/// [`find_pauses`] from the signal's [`frame_levels_db`] (or a [`LevelMeter`]'s).
pub fn pauses_from_levels(levels: &[f32], opts: &PauseOptions) -> Vec<Pause> {
    let thresholds = quiet_thresholds(levels, opts);
    let mut quiet: Vec<bool> = levels.iter().zip(&thresholds).map(|(l, t)| l < t).collect();
    // A click between two quiet stretches does not end the pause.
    let max_click = (opts.max_click.max(0.0) * FRAMES_PER_SECOND as f64).round() as usize;
    let loud: Vec<bool> = quiet.iter().map(|&q| !q).collect();
    for (a, b) in runs(&loud) {
        if a > 0 && b < quiet.len() && b - a <= max_click {
            quiet[a..b].iter_mut().for_each(|q| *q = true);
        }
    }
    let min_frames = (opts.min_duration.max(0.0) * FRAMES_PER_SECOND as f64)
        .round()
        .max(1.0) as usize;
    let frame = 1.0 / FRAMES_PER_SECOND as f64;
    runs(&quiet)
        .into_iter()
        .filter(|&(a, b)| b - a >= min_frames)
        .map(|(a, b)| Pause {
            start: a as f64 * frame,
            end: b as f64 * frame,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16_000;

    /// Seeded noise in `-amp..amp`.
    fn noise(n: usize, amp: f32, rng: &mut fastrand::Rng) -> Vec<f32> {
        (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * amp).collect()
    }

    /// A signal of 440-Hz tone bursts of amplitude `tone` over noise of amplitude
    /// `floor`; `bursts` are `(start, end)` seconds, the signal `total` seconds long.
    fn bursts(bursts: &[(f64, f64)], total: f64, tone: f32, floor: f32) -> Vec<f32> {
        let n = (total * RATE as f64) as usize;
        let mut rng = fastrand::Rng::with_seed(7);
        let mut x = noise(n, floor, &mut rng);
        for &(a, b) in bursts {
            let (a, b) = ((a * RATE as f64) as usize, (b * RATE as f64) as usize);
            for (i, v) in x[a..b].iter_mut().enumerate() {
                *v += tone * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / RATE as f32).sin();
            }
        }
        x
    }

    /// Asserts that `got` are the `want` pauses, every edge within one frame.
    fn assert_pauses(got: &[Pause], want: &[(f64, f64)]) {
        let frame = 1.0 / FRAMES_PER_SECOND as f64 + 1e-9;
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (p, &(a, b)) in got.iter().zip(want) {
            assert!(
                (p.start - a).abs() <= frame && (p.end - b).abs() <= frame,
                "{p:?} vs ({a}, {b}); all: {got:?}"
            );
        }
    }

    /// The prefix-sum definition the meter must reproduce bit for bit.
    fn levels_from_prefix_sums(pcm: &[f32], hop: usize) -> Vec<f32> {
        let mut prefix = vec![0f64];
        let mut acc = 0f64;
        for &x in pcm {
            acc += f64::from(x) * f64::from(x);
            prefix.push(acc);
        }
        (0..pcm.len().div_ceil(hop))
            .map(|i| {
                let a = (i * hop).saturating_sub(hop);
                let b = ((i + 2) * hop).min(pcm.len());
                let energy = (prefix[b] - prefix[a]) / (b - a).max(1) as f64;
                ((10.0 * energy.max(1e-10).log10()) as f32).max(SILENCE_DB)
            })
            .collect()
    }

    #[test]
    fn levels_pushed_in_pieces_are_the_bits_of_the_whole_signal() {
        let mut rng = fastrand::Rng::with_seed(3);
        for n in [0usize, 1, 159, 160, 161, 16_000, 48_017] {
            let x = noise(n, 0.5, &mut rng);
            let want = levels_from_prefix_sums(&x, 160);
            assert_eq!(frame_levels_db(&x, RATE), want, "{n} samples whole");
            let mut meter = LevelMeter::new(RATE);
            let mut rest = &x[..];
            while !rest.is_empty() {
                let k = rng.usize(0..=rest.len().min(700));
                meter.push(&rest[..k]);
                rest = &rest[k..];
            }
            let got = meter.finish();
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
                    && got.len() == want.len(),
                "{n} samples in pieces"
            );
        }
        assert!(LevelMeter::new(50).finish().is_empty());
    }

    #[test]
    fn pauses_between_tone_bursts_over_a_noise_floor() {
        // Gaps of 0.6 s, 0.2 s (too short), 0.35 s, and a 0.5-s tail; 0.15 s of noise
        // before the first burst is too short as well.
        let x = bursts(
            &[(0.15, 1.0), (1.6, 2.5), (2.7, 4.0), (4.35, 5.0)],
            5.5,
            0.3,
            0.003,
        );
        let got = find_pauses(&x, RATE, &PauseOptions::default());
        assert_pauses(&got, &[(1.0, 1.6), (4.0, 4.35), (5.0, 5.5)]);
    }

    #[test]
    fn a_click_inside_a_pause_does_not_split_it() {
        let mut x = bursts(&[(0.0, 1.0), (2.0, 3.0)], 3.0, 0.3, 0.001);
        // 5 ms of full-scale click at 1.5 s.
        x[24_000..24_080].iter_mut().for_each(|v| *v = 0.9);
        let got = find_pauses(&x, RATE, &PauseOptions::default());
        assert_pauses(&got, &[(1.0, 2.0)]);
    }

    #[test]
    fn a_loud_noise_floor_still_shows_its_pauses() {
        // Noise only 22 dB under the tone: 35 dB under the speech level is never
        // reached, but frames near the noise floor are quiet.
        let x = bursts(
            &[(0.0, 2.0), (2.8, 5.0), (5.4, 6.5), (7.3, 8.0)],
            8.0,
            0.3,
            0.03,
        );
        let got = find_pauses(&x, RATE, &PauseOptions::default());
        assert_pauses(&got, &[(2.0, 2.8), (5.0, 5.4), (6.5, 7.3)]);
    }

    #[test]
    fn steady_sound_and_digital_silence_have_no_pauses() {
        let mut rng = fastrand::Rng::with_seed(3);
        assert!(find_pauses(
            &noise(80_000, 0.1, &mut rng),
            RATE,
            &PauseOptions::default()
        )
        .is_empty());
        assert!(find_pauses(
            &bursts(&[(0.0, 5.0)], 5.0, 0.3, 0.0),
            RATE,
            &PauseOptions::default()
        )
        .is_empty());
        assert!(find_pauses(&vec![0.0; 16_000], RATE, &PauseOptions::default()).is_empty());
        assert!(find_pauses(&[], RATE, &PauseOptions::default()).is_empty());
        assert!(find_pauses(&[0.5; 100], 0, &PauseOptions::default()).is_empty());
        // Degenerate options do not break the search.
        let odd = PauseOptions {
            context: 0.0,
            min_duration: 0.0,
            max_click: -1.0,
            ..PauseOptions::default()
        };
        let x = bursts(&[(0.0, 0.5)], 1.05, 0.3, 0.001);
        assert!(find_pauses(&x, RATE, &odd)
            .iter()
            .all(|p| p.start >= 0.0 && p.end <= 1.05 + 1e-9));
    }
}
