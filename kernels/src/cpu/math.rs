//! Branch-free elementary functions that vectorise inside the kernels' loops.

use super::simd::{fmadd, fmadd64};

/// Below this, e^x is subnormal in f32: [`exp_f32`] returns 0 (a softmax weight that
/// small is below f32 resolution next to the row maximum's weight of 1).
pub(crate) const EXP_F32_MIN_X: f32 = -87.336_54;
/// Above this, 2^round(x·log2 e) would not be a finite f32 exponent; e^88 is still finite.
pub(crate) const EXP_F32_MAX_X: f32 = 88.0;
/// ln 2 split so that `n * LN2_HI_F32` is exact for |n| < 2^15 (Cody–Waite reduction).
pub(crate) const LN2_HI_F32: f32 = 355.0 / 512.0;
pub(crate) const LN2_LO_F32: f32 = -2.121_944_4e-4;
/// 1.5·2^23: adding it rounds an f32 of magnitude < 2^22 to an integer held in the low
/// mantissa bits.
pub(crate) const ROUND_MAGIC_F32: f32 = 12_582_912.0;

/// e^x in f32 with relative error below 3e-7 for x in [-87.3, 88]; 0 below, NaN for NaN.
///
/// Range reduction x = n·ln2 + r with |r| ≤ ln2/2, then a degree-7 Taylor polynomial
/// (truncation error r^8/8! < 6e-9) scaled by 2^n assembled in the exponent bits.
#[inline(always)]
pub(crate) fn exp_f32<const FMA: bool>(x: f32) -> f32 {
    let xc = x.clamp(EXP_F32_MIN_X, EXP_F32_MAX_X);
    let shifted = fmadd::<FMA>(xc, std::f32::consts::LOG2_E, ROUND_MAGIC_F32);
    let n = shifted - ROUND_MAGIC_F32;
    let r = fmadd::<FMA>(-n, LN2_HI_F32, xc);
    let r = fmadd::<FMA>(-n, LN2_LO_F32, r);
    let mut p = 1.0 / 5040.0;
    p = fmadd::<FMA>(p, r, 1.0 / 720.0);
    p = fmadd::<FMA>(p, r, 1.0 / 120.0);
    p = fmadd::<FMA>(p, r, 1.0 / 24.0);
    p = fmadd::<FMA>(p, r, 1.0 / 6.0);
    p = fmadd::<FMA>(p, r, 0.5);
    p = fmadd::<FMA>(p, r, 1.0);
    p = fmadd::<FMA>(p, r, 1.0);
    // The low mantissa bits of `shifted` hold n + 2^22; shifting n + 127 into the exponent
    // field builds 2^n for n in [-126, 127].
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    let y = p * scale;
    if x < EXP_F32_MIN_X {
        0.0
    } else {
        y
    }
}

/// ln 2 split so that `n * LN2_HI_F64` is exact for |n| < 2^20.
const LN2_HI_F64: f64 = 0.693_147_180_369_123_8;
const LN2_LO_F64: f64 = 1.908_214_929_270_587_7e-10;
/// 1.5·2^52, the f64 counterpart of [`ROUND_MAGIC_F32`].
const ROUND_MAGIC_F64: f64 = 6_755_399_441_055_744.0;

/// e^y in f64 for y in [-700, 0], relative error below 1e-11.
///
/// Same reduction as [`exp_f32`] with a degree-9 Taylor polynomial (r^10/10! < 7e-12).
#[inline(always)]
fn exp_f64_nonpositive<const FMA: bool>(y: f64) -> f64 {
    let shifted = fmadd64::<FMA>(y, std::f64::consts::LOG2_E, ROUND_MAGIC_F64);
    let n = shifted - ROUND_MAGIC_F64;
    let r = fmadd64::<FMA>(-n, LN2_HI_F64, y);
    let r = fmadd64::<FMA>(-n, LN2_LO_F64, r);
    let mut p = 1.0 / 362_880.0;
    p = fmadd64::<FMA>(p, r, 1.0 / 40_320.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 5_040.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 720.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 120.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 24.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 6.0);
    p = fmadd64::<FMA>(p, r, 0.5);
    p = fmadd64::<FMA>(p, r, 1.0);
    p = fmadd64::<FMA>(p, r, 1.0);
    let scale = f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52);
    p * scale
}

/// Below this, e^y is subnormal in f64: [`exp_f64_fine`] returns 0.
const EXP_F64_MIN_Y: f64 = -708.0;

/// e^y in f64 for y ≤ 0, within a few units in the last place: the reduction of
/// [`exp_f64_nonpositive`] with a degree-13 Taylor polynomial (r^14/14! < 5e-18), so that
/// a sum of such terms is the sum of the correctly rounded ones to within rounding. 0 below
/// −708 (and for −∞), NaN for NaN.
#[inline(always)]
pub(crate) fn exp_f64_fine<const FMA: bool>(y: f64) -> f64 {
    let yc = if y < EXP_F64_MIN_Y { EXP_F64_MIN_Y } else { y };
    let shifted = fmadd64::<FMA>(yc, std::f64::consts::LOG2_E, ROUND_MAGIC_F64);
    let n = shifted - ROUND_MAGIC_F64;
    let r = fmadd64::<FMA>(-n, LN2_HI_F64, yc);
    let r = fmadd64::<FMA>(-n, LN2_LO_F64, r);
    let mut p = 1.0 / 6_227_020_800.0;
    p = fmadd64::<FMA>(p, r, 1.0 / 479_001_600.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 39_916_800.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 3_628_800.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 362_880.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 40_320.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 5_040.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 720.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 120.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 24.0);
    p = fmadd64::<FMA>(p, r, 1.0 / 6.0);
    p = fmadd64::<FMA>(p, r, 0.5);
    p = fmadd64::<FMA>(p, r, 1.0);
    p = fmadd64::<FMA>(p, r, 1.0);
    let scale = f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52);
    let e = p * scale;
    if y < EXP_F64_MIN_Y {
        0.0
    } else {
        e
    }
}

/// Beyond |x| = 14.5, GELU(x) is x (x > 0) or below the smallest f32 subnormal (x < 0).
const GELU_X_MAX: f64 = 14.5;

/// erfcx(t) = e^(t²)·erfc(t) ≈ P(t)/Q(t) on [0, 10.5], max relative error 6.2e-9.
/// Fitted by `tools/fit_erfcx.py` (minimax-weighted least squares; Q > 0 on the range).
const ERFCX_P: [f64; 5] = [
    1.000_000_006_185_022_3,
    1.241_662_737_838_904_2,
    0.735_016_519_418_554_4,
    0.230_847_590_756_526_78,
    0.033_139_203_772_803_4,
];
const ERFCX_Q: [f64; 6] = [
    1.0,
    2.370_042_525_213_955,
    2.409_313_171_343_047_3,
    1.331_739_350_611_499_8,
    0.409_191_550_098_922_2,
    0.058_737_064_502_378_64,
];

/// GELU with the exact erf form, 0.5·x·(1 + erf(x/√2)), evaluated in f64.
///
/// Uses Φ(x) = 1 − ½·erfc(t) for x ≥ 0 and ½·erfc(t) for x < 0 (t = |x|/√2), so the left
/// tail keeps full relative accuracy instead of cancelling in 1 + erf. x² is exact in f64
/// for an f32 x, so e^(−t²) carries no argument error; the result's relative error is
/// the f32 rounding plus ~1e-8 (fit and exp).
#[inline(always)]
pub(crate) fn gelu_one<const FMA: bool>(x: f32) -> f32 {
    let xd = x as f64;
    let a = xd.abs().min(GELU_X_MAX);
    let t = a * std::f64::consts::FRAC_1_SQRT_2;
    let e = exp_f64_nonpositive::<FMA>(-0.5 * a * a);
    let mut p = ERFCX_P[4];
    for &c in ERFCX_P[..4].iter().rev() {
        p = fmadd64::<FMA>(p, t, c);
    }
    let mut q = ERFCX_Q[5];
    for &c in ERFCX_Q[..5].iter().rev() {
        q = fmadd64::<FMA>(q, t, c);
    }
    let half_erfc = 0.5 * e * p / q;
    let phi = if xd >= 0.0 {
        1.0 - half_erfc
    } else {
        half_erfc
    };
    // Far left the result underflows f32; returning −0 directly also maps −∞ to its
    // limit instead of −∞·0 = NaN. Results below f32's normal range (x in about
    // (−14.5, −13.1), or a subnormal x) become a zero of x's sign: on x86 every
    // multiply-add of the next GEMM that reads a subnormal takes a microcode assist, and
    // the encoder's later MLPs produce thousands of them (fc2 ran 15× slower). The value
    // lost is below 1.2e-38.
    let y = xd * phi;
    if xd < -GELU_X_MAX {
        -0.0
    } else if y.abs() < f32::MIN_POSITIVE as f64 {
        0.0f32.copysign(x)
    } else {
        y as f32
    }
}

/// [`gelu_one`] evaluated in f32 (the erfcx fit's coefficients rounded to f32): relative
/// error below 2e-6 where the result is a normal f32 (`kernels/tests/activation.rs`),
/// about 2.4 times as fast. x² is split exactly into hi + lo (with an FMA where there is
/// one, else by Dekker's product), so e^(−x²/2) carries no argument error beyond lo's
/// first-order correction: dropping lo would cost up to 4e-6 near |x| = 13.
#[inline(always)]
pub(crate) fn gelu_one_f32<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs().min(GELU_X_MAX as f32);
    let t = a * std::f32::consts::FRAC_1_SQRT_2;
    let hi = a * a;
    let lo = if FMA {
        a.mul_add(a, -hi)
    } else {
        // Veltkamp's split of a into 12-bit halves: their products are exact in f32.
        let c = a * 4097.0;
        let a_hi = c - (c - a);
        let a_lo = a - a_hi;
        ((a_hi * a_hi - hi) + 2.0 * a_hi * a_lo) + a_lo * a_lo
    };
    let e = exp_f32::<FMA>(-0.5 * hi) * fmadd::<FMA>(-0.5, lo, 1.0);
    let mut p = ERFCX_P[4] as f32;
    for &c in ERFCX_P[..4].iter().rev() {
        p = fmadd::<FMA>(p, t, c as f32);
    }
    let mut q = ERFCX_Q[5] as f32;
    for &c in ERFCX_Q[..5].iter().rev() {
        q = fmadd::<FMA>(q, t, c as f32);
    }
    let half_erfc = 0.5 * e * p / q;
    let phi = if x >= 0.0 { 1.0 - half_erfc } else { half_erfc };
    // As in `gelu_one`: −0 far left, and a zero of x's sign for results below f32's
    // normal range (the next GEMM would take a microcode assist on each).
    let y = x * phi;
    if x < -(GELU_X_MAX as f32) {
        -0.0
    } else if y.abs() < f32::MIN_POSITIVE {
        0.0f32.copysign(x)
    } else {
        y
    }
}
