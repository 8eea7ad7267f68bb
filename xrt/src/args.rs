//! The mlir-aie calling convention of a kernel run: argument positions, and how a tensor
//! is laid out in a data buffer of the kernel's element type.

use crate::manifest::ArgDtype;
use amanuensis_runtime::tensor::{DType, Data};
use amanuensis_runtime::Tensor;

/// The `run` opcode of the instruction-stream flow (2, the legacy TXN flow, is deprecated).
pub const OPCODE_INSTRUCTIONS: u32 = 3;

/// Kernel argument holding the instruction buffer; data buffers start at 3.
pub const INSTR_ARG: u32 = 1;

/// First data-buffer argument.
pub const FIRST_DATA_ARG: u32 = 3;

/// Writes a tensor into a data buffer in the kernel's element type.
pub fn write_tensor(t: &Tensor, dtype: ArgDtype, dst: &mut [u8]) -> Result<(), String> {
    let n = t.numel();
    if n.checked_mul(dtype.size()) != Some(dst.len()) {
        return Err(format!(
            "{} elements do not fill a {}-byte {dtype} buffer",
            n,
            dst.len()
        ));
    }
    match (dtype, t.data()) {
        (ArgDtype::Bf16, Data::F32(v)) => {
            for (d, &x) in dst.chunks_exact_mut(2).zip(v) {
                d.copy_from_slice(&half::bf16::from_f32(x).to_bits().to_le_bytes());
            }
        }
        (ArgDtype::Bf16, Data::F16(v)) => {
            for (d, &x) in dst.chunks_exact_mut(2).zip(v) {
                d.copy_from_slice(&half::bf16::from_f32(x.to_f32()).to_bits().to_le_bytes());
            }
        }
        (ArgDtype::F32, Data::F32(v)) => {
            for (d, &x) in dst.chunks_exact_mut(4).zip(v) {
                d.copy_from_slice(&x.to_le_bytes());
            }
        }
        (ArgDtype::F32, Data::F16(v)) => {
            for (d, &x) in dst.chunks_exact_mut(4).zip(v) {
                d.copy_from_slice(&x.to_f32().to_le_bytes());
            }
        }
        (ArgDtype::I32, Data::I32(v)) => {
            for (d, &x) in dst.chunks_exact_mut(4).zip(v) {
                d.copy_from_slice(&x.to_le_bytes());
            }
        }
        (d, _) => return Err(format!("a {} tensor cannot fill a {d} buffer", t.dtype())),
    }
    Ok(())
}

/// Reads a data buffer into a tensor of the node's output type.
pub fn read_tensor(
    src: &[u8],
    dtype: ArgDtype,
    want: DType,
    shape: &[usize],
) -> Result<Tensor, String> {
    let n: usize = shape.iter().product();
    if n.checked_mul(dtype.size()) != Some(src.len()) {
        return Err(format!(
            "a {}-byte {dtype} buffer does not hold shape {shape:?}",
            src.len()
        ));
    }
    let t = match (dtype, want) {
        (ArgDtype::F32, DType::F32) => Tensor::from_f32(
            shape,
            src.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        (ArgDtype::Bf16, DType::F32) => Tensor::from_f32(
            shape,
            src.chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
        ),
        (ArgDtype::I32, DType::I32) => Tensor::from_i32(
            shape,
            src.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        (d, w) => return Err(format!("a {d} buffer cannot become a {w} tensor")),
    };
    t.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marshalling_rounds_to_bf16_and_round_trips_f32_and_i32() {
        let t = Tensor::from_f32(
            &[4],
            vec![1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -0.0, f32::NAN],
        )
        .unwrap();
        let mut b = vec![0u8; 8];
        write_tensor(&t, ArgDtype::Bf16, &mut b).unwrap();
        let bits: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        // Ties go to even: 1+2^-8 -> 1.0 (0x3f80), 1+3*2^-8 -> 1+2^-6 (0x3f82); -0 keeps its sign.
        assert_eq!(&bits[..3], &[0x3f80, 0x3f82, 0x8000]);
        assert!(half::bf16::from_bits(bits[3]).is_nan());

        let f16 = Tensor::new(
            &[2],
            Data::F16(vec![half::f16::from_f32(0.5), half::f16::from_f32(-3.0)].into()),
        )
        .unwrap();
        let mut b = vec![0u8; 8];
        write_tensor(&f16, ArgDtype::F32, &mut b).unwrap();
        assert_eq!(
            read_tensor(&b, ArgDtype::F32, DType::F32, &[2])
                .unwrap()
                .f32s()
                .unwrap(),
            &[0.5, -3.0]
        );

        let i = Tensor::from_i32(&[3], vec![-7, 0, 1 << 30]).unwrap();
        let mut b = vec![0u8; 12];
        write_tensor(&i, ArgDtype::I32, &mut b).unwrap();
        assert_eq!(
            read_tensor(&b, ArgDtype::I32, DType::I32, &[3])
                .unwrap()
                .i32s()
                .unwrap(),
            &[-7, 0, 1 << 30]
        );
    }

    #[test]
    fn marshalling_refuses_mismatched_sizes_and_types() {
        let t = Tensor::from_f32(&[3], vec![1.0, 2.0, 3.0]).unwrap();
        assert_eq!(
            write_tensor(&t, ArgDtype::F32, &mut [0u8; 8]).unwrap_err(),
            "3 elements do not fill a 8-byte f32 buffer"
        );
        assert_eq!(
            write_tensor(&t, ArgDtype::I32, &mut [0u8; 12]).unwrap_err(),
            "a f32 tensor cannot fill a i32 buffer"
        );
        assert_eq!(
            read_tensor(&[0u8; 6], ArgDtype::Bf16, DType::F32, &[2]).unwrap_err(),
            "a 6-byte bf16 buffer does not hold shape [2]"
        );
        assert_eq!(
            read_tensor(&[0u8; 8], ArgDtype::F32, DType::I32, &[2]).unwrap_err(),
            "a f32 buffer cannot become a i32 tensor"
        );
    }
}
