//! Quantizing weight matrices to the int8 forms the CPU linear kernels run on, and reading
//! them back from an int8 weight file ([`amanuensis_runtime::quant`]).

use std::path::Path;

use amanuensis_kernels::cpu::int8;
use amanuensis_runtime::quant::{self, Int8Matrix};
use amanuensis_runtime::{DType, OpError, Tensor};

/// The int8 form of a `[n, k]` f16 or f32 weight: per-output-channel scales, the kernels'
/// packed layout and column sums.
pub fn quantize_matrix(t: &Tensor) -> Result<Int8Matrix, OpError> {
    let &[n, k] = t.shape() else {
        return Err(OpError(format!(
            "only matrices are quantized, this weight has shape {:?}",
            t.shape()
        )));
    };
    let mut packed = vec![0i8; int8::packed_len(n, k)];
    let mut scales = vec![0f32; int8::padded_n(n)];
    if !matches!(t.dtype(), DType::F16 | DType::F32) {
        return Err(OpError(format!("cannot quantize a {} tensor", t.dtype())));
    }
    // f16 and f32 tensors give every row (the type was checked above).
    let widen = |j: usize, row: &mut [f32]| {
        if let Ok(r) = t.f32_range(j * k..(j + 1) * k) {
            row.copy_from_slice(&r);
        }
    };
    int8::quantize_weight(n, k, widen, &mut packed, &mut scales)
        .map_err(|e| OpError(format!("cannot quantize: {e}")))?;
    let sums = int8::column_sums(&packed, n, k);
    Ok(Int8Matrix::new(n, k, packed, scales, sums))
}

/// Whether int8 products run on vector instructions on this CPU (else the portable path,
/// slower than f32).
pub fn int8_is_vectorised() -> bool {
    int8::Int8Path::best() != int8::Int8Path::Portable
}

/// Whether this CPU multiplies bf16 in hardware (AVX-512 BF16); elsewhere bf16 products
/// are emulated, slower than f32.
pub fn bf16_is_native() -> bool {
    amanuensis_kernels::cpu::bf16::Bf16Path::native()
}

/// Whether bf16 products run on AMX tiles on this CPU (the widest bf16 path).
pub fn bf16_on_tiles() -> bool {
    amanuensis_kernels::cpu::bf16::Bf16Path::best() == amanuensis_kernels::cpu::bf16::Bf16Path::Amx
}

/// Whether the encoder's attention should run as bf16x3 products on AMX tiles: asked for
/// with `AMANUENSIS_BF16X3=1`, and the CPU has AMX-BF16 granted by the OS. Not the
/// default: nearer f32 than the default's bf16 products (and no faster since those run on
/// 512-bit FMAs), but it moved a word of the public clips at beam 5 (`docs/kernels.md`,
/// "bf16x3 products").
pub fn bf16x3_on_tiles() -> bool {
    use amanuensis_kernels::cpu::bf16::Bf16Path;
    let on = std::env::var("AMANUENSIS_BF16X3").is_ok_and(|v| v == "1");
    on && Bf16Path::widest() == Bf16Path::Amx
}

/// The name of the int8 path this CPU runs (for reports).
pub fn int8_path_name() -> &'static str {
    int8::Int8Path::best().name()
}

/// Reads an int8 weight file written by [`save_int8`], checking every form's layout.
pub fn load_int8(path: &Path) -> amanuensis_runtime::error::Result<quant::Int8Forms> {
    quant::load_int8(path, int8::packed_len, int8::padded_n)
}

pub use quant::save_int8;
