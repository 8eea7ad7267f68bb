//! What every packet source shares: decoding progress and step results, codec-delay
//! trimming, down-mixing with sample sanitising, the bad-packet policy, and the guard that
//! turns decoder panics into errors.

use std::cell::Cell;
use std::ops::Range;

use crate::error::{corrupt, AudioError};
use crate::limits::MAX_BAD_PACKETS;

thread_local! {
    /// Depth of decoder calls whose panics are caught and reported as damaged data.
    static DECODER_GUARD: Cell<u32> = const { Cell::new(0) };
}

/// `catch_unwind` around a decoder call, marking the call so that
/// [`install_panic_filter`] keeps its panic message off stderr (the error that replaces
/// it says what happened).
pub(crate) fn catch_decoder_panic<R>(
    f: impl FnOnce() -> R + std::panic::UnwindSafe,
) -> std::thread::Result<R> {
    DECODER_GUARD.with(|g| g.set(g.get() + 1));
    let r = std::panic::catch_unwind(f);
    DECODER_GUARD.with(|g| g.set(g.get() - 1));
    r
}

/// Installs a panic hook that logs (at debug level) instead of printing the panics the
/// audio decoders raise on damaged input, which are caught and turned into errors; every
/// other panic is printed by the previous hook as usual. Call once, at program start.
pub fn install_panic_filter() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if DECODER_GUARD.with(|g| g.get()) > 0 {
            tracing::debug!("audio decoder panic, reported as damaged data: {info}");
        } else {
            previous(info);
        }
    }));
}

/// Decoding progress, for the end-of-stream checks.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) packets_decoded: u64,
    pub(crate) bad_packets_in_a_row: u32,
    pub(crate) frames_kept: u64,
    /// The source reported that its data stops early (e.g. a WAV data chunk cut short).
    pub(crate) cut_short: bool,
    /// Frames holding a sample that was NaN, infinite or beyond [`MAX_SAMPLE_MAGNITUDE`]
    /// (made 0 or clipped by [`sane`]), for the end-of-stream warning.
    pub(crate) frames_repaired: u64,
}

/// What one decoding step produced.
pub(crate) enum Step {
    /// A packet was decoded (its kept frames are in the mono buffer, possibly none).
    Data,
    /// The stream ended.
    End,
}

/// Frames to drop at the start and where to stop, counted in decoded frames.
#[derive(Default, Clone, Copy)]
pub(crate) struct Trim {
    /// Decoded frames seen so far.
    pub(crate) pos: u64,
    /// Frames before this position are codec delay.
    pub(crate) start: u64,
    /// Frames from this position on are padding.
    pub(crate) end: Option<u64>,
}

impl Trim {
    /// The part of the next `n` decoded frames to keep; advances the position.
    pub(crate) fn take(&mut self, n: usize) -> Range<usize> {
        let a = self.pos;
        let b = a + n as u64;
        self.pos = b;
        let lo = self.start.clamp(a, b);
        let hi = self.end.map_or(b, |e| e.clamp(a, b)).max(lo);
        (lo - a) as usize..(hi - a) as usize
    }
}

/// Largest sample magnitude passed on (2^16 times full scale, so that a float file written
/// in integer units still decodes): float samples beyond it are clipped there, and NaN and
/// infinite ones become 0. A damaged float file can hold NaN, infinities or values near
/// `f64::MAX`, which would otherwise turn the resampler's FFT into NaN (and make rubato
/// panic) or poison the log-mel spectrum. (An infinity clipped rather than silenced would
/// set the spectrum's maximum alone, and the speech would fall below its 80-dB floor.)
pub const MAX_SAMPLE_MAGNITUDE: f64 = 65_536.0;

/// A decoded sample made finite and bounded (see [`MAX_SAMPLE_MAGNITUDE`]).
#[inline]
pub(crate) fn sane(x: f64) -> f64 {
    if !x.is_finite() {
        0.0
    } else {
        x.clamp(-MAX_SAMPLE_MAGNITUDE, MAX_SAMPLE_MAGNITUDE)
    }
}

/// Appends the average of the channels of `frames` (of interleaved `samples`), times `gain`,
/// each frame made [`sane`]; returns how many frames that changed (a NaN compares unequal to
/// itself, so it counts too).
pub(crate) fn downmix<T: Copy + Into<f64>>(
    samples: &[T],
    channels: usize,
    frames: Range<usize>,
    gain: f64,
    out: &mut Vec<f64>,
) -> u64 {
    let Some(frames_slice) = samples.get(frames.start * channels..frames.end * channels) else {
        return 0;
    };
    let mut repaired = 0u64;
    if channels == 1 {
        out.extend(frames_slice.iter().map(|&s| {
            let x = s.into() * gain;
            let y = sane(x);
            repaired += u64::from(y != x);
            y
        }));
    } else {
        let scale = gain / channels as f64;
        out.extend(frames_slice.chunks_exact(channels).map(|f| {
            // Each channel is bounded before the sum, so that one channel's infinity cannot
            // cancel another's; a frame counts once however many of its parts changed.
            let mut changed = false;
            let sum: f64 = f
                .iter()
                .map(|&s| {
                    let x = s.into();
                    let y = sane(x);
                    changed |= y != x;
                    y
                })
                .sum();
            let x = sum * scale;
            let y = sane(x);
            repaired += u64::from(changed || y != x);
            y
        }));
    }
    repaired
}

/// Why a packet could not be decoded.
pub(crate) enum PacketError {
    /// Damaged packet: skipped.
    Bad(String),
    /// A feature of the codec this build does not decode.
    Unsupported(String),
    /// Decoding cannot go on.
    Fatal(AudioError),
}

pub(crate) fn skip_bad_packet(name: &str, msg: &str, stats: &mut Stats) -> Result<(), AudioError> {
    stats.bad_packets_in_a_row += 1;
    if stats.bad_packets_in_a_row > MAX_BAD_PACKETS {
        return Err(corrupt(
            name,
            format!("{MAX_BAD_PACKETS} packets in a row failed to decode; last: {msg}"),
        ));
    }
    tracing::warn!("{name}: skipping a packet that does not decode: {msg}");
    Ok(())
}
