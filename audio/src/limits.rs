//! Rates and sizes every stage of decoding checks against.

/// The sample rate Whisper expects, in Hz.
pub const SAMPLE_RATE: u32 = 16_000;

/// Lowest source sample rate accepted, in Hz.
pub const MIN_SOURCE_RATE: u32 = 1_000;

/// Highest source sample rate accepted, in Hz (the highest rate used in studio audio).
pub const MAX_SOURCE_RATE: u32 = 768_000;

/// The path that stands for standard input.
pub const STDIN_PATH: &str = "-";

/// Packets in a row that may fail to decode (and be skipped) before decoding gives up.
pub const MAX_BAD_PACKETS: u32 = 16;

/// Largest Ogg packet accepted (Opus audio packets are at most ~8 KB per stream; comment
/// packets may carry cover art).
pub(crate) const MAX_OGG_PACKET: usize = 32 << 20;
