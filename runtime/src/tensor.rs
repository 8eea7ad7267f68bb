//! Dense row-major tensors on the host.

use crate::error::OpError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
        }
    }

    /// The type operators compute in for values stored as `self`: f16 weights are widened
    /// to f32 when loaded for the CPU.
    pub fn compute(self) -> DType {
        match self {
            DType::F16 => DType::F32,
            other => other,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I32 => "i32",
        })
    }
}

/// Storage of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F16(F16Buf),
    I32(Vec<i32>),
}

/// f16 elements: owned, or read in place from a memory-mapped weight file (the map is
/// shared and kept alive by every tensor that uses it). Derefs to `[f16]`.
#[derive(Clone)]
pub struct F16Buf(F16Repr);

#[derive(Clone)]
enum F16Repr {
    Owned(Vec<half::f16>),
    Mapped {
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
}

impl F16Buf {
    /// The `len` f16 values at byte `offset` of `map`, in place when they are 2-byte
    /// aligned and inside the map and the host is little-endian like the file (`None`
    /// otherwise: the caller copies them).
    pub fn mapped(map: Arc<memmap2::Mmap>, offset: usize, len: usize) -> Option<F16Buf> {
        if cfg!(target_endian = "big") {
            return None;
        }
        let end = offset.checked_add(len.checked_mul(2)?)?;
        bytemuck::try_cast_slice::<u8, half::f16>(map.get(offset..end)?).ok()?;
        Some(F16Buf(F16Repr::Mapped { map, offset, len }))
    }

    /// Whether the values are read in place from a mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, F16Repr::Mapped { .. })
    }
}

impl From<Vec<half::f16>> for F16Buf {
    fn from(v: Vec<half::f16>) -> Self {
        F16Buf(F16Repr::Owned(v))
    }
}

impl std::ops::Deref for F16Buf {
    type Target = [half::f16];
    fn deref(&self) -> &[half::f16] {
        match &self.0 {
            F16Repr::Owned(v) => v,
            // Alignment and bounds were checked in `mapped`, and the map never changes.
            F16Repr::Mapped { map, offset, len } => {
                bytemuck::cast_slice(&map[*offset..*offset + 2 * *len])
            }
        }
    }
}

impl<'a> IntoIterator for &'a F16Buf {
    type Item = &'a half::f16;
    type IntoIter = std::slice::Iter<'a, half::f16>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for F16Buf {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl std::fmt::Debug for F16Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "F16Buf({how}, {} values)", self.len())
    }
}

/// A dense, row-major tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
    /// The int8 form of a weight matrix, which linear kernels use instead of `data`
    /// ([`crate::quant`]); `None` for every other tensor.
    int8: Option<Arc<crate::quant::Int8Matrix>>,
    /// How many f32 elements of `data`'s allocation are known to hold values, its length
    /// included ([`Tensor::from_f32_prefix`]).
    initialized: Initialized,
}

/// The length an f32 vector had before a tensor shortened it to its shape: its elements
/// up to there hold values, so the vector can be lengthened back to it without writing
/// them ([`Tensor::into_f32_lengthened`]). Only the tensor that shortened the vector knows
/// it: a clone's vector is an allocation of its own (0: nothing known), and it takes no
/// part in equality.
#[derive(Debug, Default)]
struct Initialized(usize);

impl Clone for Initialized {
    fn clone(&self) -> Self {
        Initialized(0)
    }
}

impl PartialEq for Initialized {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Number of elements of a shape (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// An f32 tensor; fails when `data.len()` does not match the shape.
    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Result<Tensor, OpError> {
        Self::new(shape, Data::F32(data))
    }

    /// An f32 tensor of `shape` in the first elements of `data`, which must hold at least
    /// that many. `data` is shortened to the shape, and the tensor remembers its length
    /// before, so that [`Tensor::into_f32_lengthened`] hands the whole buffer back: a slot
    /// of the host arena holds values of several sizes in turn, and a larger one after a
    /// smaller one would otherwise find the buffer short and write the difference again.
    pub fn from_f32_prefix(shape: &[usize], mut data: Vec<f32>) -> Result<Tensor, OpError> {
        let (n, had) = (numel(shape), data.len());
        if had < n {
            return Err(OpError(format!(
                "tensor of shape {shape:?} needs {n} elements, the buffer holds {had}"
            )));
        }
        data.truncate(n);
        let mut t = Self::new(shape, Data::F32(data))?;
        t.initialized = Initialized(had);
        Ok(t)
    }

    /// The f32 elements as a vector lengthened back to the length it had when
    /// [`Tensor::from_f32_prefix`] shortened it (its own length otherwise); `None` for
    /// another dtype. For giving a buffer back to the arena.
    pub fn into_f32_lengthened(self) -> Option<Vec<f32>> {
        let Data::F32(mut v) = self.data else {
            return None;
        };
        let had = self.initialized.0;
        if had > v.len() && had <= v.capacity() {
            // SAFETY: `had` was this vector's length when `from_f32_prefix` shortened it,
            // so its first `had` elements held values then. Since, the vector has stayed in
            // this tensor, which never lengthens, reallocates or replaces it: it hands out
            // its elements only as slices of its length (`f32s_mut`), and the vector itself
            // only by consuming the tensor (this method, `into_f32`, `into_data`). So those
            // elements still hold the values they had. A clone knows nothing (its
            // `Initialized` is 0): its vector is an allocation of its own.
            unsafe { v.set_len(had) };
        }
        Some(v)
    }

    /// An i32 tensor; fails when `data.len()` does not match the shape.
    pub fn from_i32(shape: &[usize], data: Vec<i32>) -> Result<Tensor, OpError> {
        Self::new(shape, Data::I32(data))
    }

    /// A rank-0 i32 tensor.
    pub fn scalar_i32(v: i32) -> Tensor {
        Tensor {
            shape: vec![],
            data: Data::I32(vec![v]),
            int8: None,
            initialized: Initialized::default(),
        }
    }

    /// A tensor of zeros.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        let n = numel(shape);
        let data = match dtype {
            DType::F32 => Data::F32(vec![0.0; n]),
            DType::F16 => Data::F16(vec![half::f16::ZERO; n].into()),
            DType::I32 => Data::I32(vec![0; n]),
        };
        Tensor {
            shape: shape.to_vec(),
            data,
            int8: None,
            initialized: Initialized::default(),
        }
    }

    /// A tensor from shape and storage; fails when their sizes disagree.
    pub fn new(shape: &[usize], data: Data) -> Result<Tensor, OpError> {
        let len = match &data {
            Data::F32(v) => v.len(),
            Data::F16(v) => v.len(),
            Data::I32(v) => v.len(),
        };
        if len != numel(shape) {
            return Err(OpError(format!(
                "tensor of shape {shape:?} needs {} elements, got {len}",
                numel(shape)
            )));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
            int8: None,
            initialized: Initialized::default(),
        })
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        match self.data {
            Data::F32(_) => DType::F32,
            Data::F16(_) => DType::F16,
            Data::I32(_) => DType::I32,
        }
    }

    /// Shape, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Size of the payload in bytes.
    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype().size()
    }

    /// Storage.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// Take the storage out (for buffer reuse).
    pub fn into_data(self) -> Data {
        self.data
    }

    /// f32 elements, or an error naming the actual dtype.
    pub fn f32s(&self) -> Result<&[f32], OpError> {
        match &self.data {
            Data::F32(v) => Ok(v),
            _ => Err(OpError(format!(
                "expected an f32 tensor, got {}",
                self.dtype()
            ))),
        }
    }

    /// f16 elements (weights kept in their stored type).
    pub fn f16s(&self) -> Result<&[half::f16], OpError> {
        match &self.data {
            Data::F16(v) => Ok(v),
            _ => Err(OpError(format!(
                "expected an f16 tensor, got {}",
                self.dtype()
            ))),
        }
    }

    /// Elements `range` as f32: borrowed from f32 storage, widened (exactly) from f16.
    /// Other dtypes are an error.
    pub fn f32_range(
        &self,
        range: std::ops::Range<usize>,
    ) -> Result<std::borrow::Cow<'_, [f32]>, OpError> {
        use std::borrow::Cow;
        let bad = || {
            OpError(format!(
                "elements {range:?} outside {} of them",
                self.numel()
            ))
        };
        match &self.data {
            Data::F32(v) => Ok(Cow::Borrowed(v.get(range.clone()).ok_or_else(bad)?)),
            Data::F16(v) => {
                let src = v.get(range.clone()).ok_or_else(bad)?;
                let mut out = vec![0f32; src.len()];
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, &mut out);
                Ok(Cow::Owned(out))
            }
            _ => Err(OpError(format!(
                "expected an f32 (or f16) tensor, got {}",
                self.dtype()
            ))),
        }
    }

    /// All elements as f32, as [`Tensor::f32_range`].
    pub fn f32s_widened(&self) -> Result<std::borrow::Cow<'_, [f32]>, OpError> {
        self.f32_range(0..self.numel())
    }

    /// How many f32 elements the buffer holds without reallocating (0 for other dtypes): a
    /// tensor rebuilt from a shortened `Vec` ([`Tensor::into_f32`], [`Tensor::from_f32`])
    /// keeps the memory it had, for a caller to grow back into.
    pub fn f32_capacity(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.capacity(),
            _ => 0,
        }
    }

    /// Mutable f32 elements.
    pub fn f32s_mut(&mut self) -> Result<&mut [f32], OpError> {
        let dt = self.dtype();
        match &mut self.data {
            Data::F32(v) => Ok(v),
            _ => Err(OpError(format!("expected an f32 tensor, got {dt}"))),
        }
    }

    /// i32 elements, or an error naming the actual dtype.
    pub fn i32s(&self) -> Result<&[i32], OpError> {
        match &self.data {
            Data::I32(v) => Ok(v),
            _ => Err(OpError(format!(
                "expected an i32 tensor, got {}",
                self.dtype()
            ))),
        }
    }

    /// Consume into f32 elements.
    pub fn into_f32(self) -> Result<Vec<f32>, OpError> {
        match self.data {
            Data::F32(v) => Ok(v),
            other => Err(OpError(format!(
                "expected an f32 tensor, got {}",
                Tensor {
                    shape: vec![],
                    data: other,
                    int8: None,
                    initialized: Initialized::default(),
                }
                .dtype()
            ))),
        }
    }

    /// `parts` stacked along a new leading dim, `[parts.len(), ..shape]`, in their common
    /// element type; fails when they differ in shape or type, or there are none.
    pub fn stack(parts: &[&Tensor]) -> Result<Tensor, OpError> {
        let first = parts
            .first()
            .ok_or_else(|| OpError("no tensors to stack".into()))?;
        if let Some((i, t)) = parts
            .iter()
            .enumerate()
            .find(|(_, t)| t.shape != first.shape || t.dtype() != first.dtype())
        {
            return Err(OpError(format!(
                "tensor {i} is {}{:?}, tensor 0 {}{:?}",
                t.dtype(),
                t.shape,
                first.dtype(),
                first.shape
            )));
        }
        let mut shape = vec![parts.len()];
        shape.extend_from_slice(&first.shape);
        fn concat<T: Clone>(parts: &[&Tensor], get: impl Fn(&Tensor) -> &[T]) -> Vec<T> {
            let mut all = Vec::with_capacity(parts.iter().map(|t| get(t).len()).sum());
            for t in parts {
                all.extend_from_slice(get(t));
            }
            all
        }
        let data = match &first.data {
            Data::F32(_) => Data::F32(concat(parts, |t| match &t.data {
                Data::F32(v) => v,
                _ => unreachable!("types checked above"),
            })),
            Data::F16(_) => Data::F16(
                concat(parts, |t| match &t.data {
                    Data::F16(v) => v,
                    _ => unreachable!("types checked above"),
                })
                .into(),
            ),
            Data::I32(_) => Data::I32(concat(parts, |t| match &t.data {
                Data::I32(v) => v,
                _ => unreachable!("types checked above"),
            })),
        };
        Tensor::new(&shape, data)
    }

    /// Index `i` of the leading dim, as a tensor of the remaining dims (a copy); fails on a
    /// scalar or when `i` is out of range.
    pub fn index_outer(&self, i: usize) -> Result<Tensor, OpError> {
        let (&count, rest) = self
            .shape
            .split_first()
            .filter(|(&n, _)| i < n)
            .ok_or_else(|| {
                OpError(format!(
                    "{:?} has no index {i} in its first dim",
                    self.shape
                ))
            })?;
        let each = self.numel() / count;
        let range = i * each..(i + 1) * each;
        let data = match &self.data {
            Data::F32(v) => Data::F32(v[range].to_vec()),
            Data::F16(v) => Data::F16(v[range].to_vec().into()),
            Data::I32(v) => Data::I32(v[range].to_vec()),
        };
        Tensor::new(rest, data)
    }

    /// Entries `idx` of the first dim, in that order: `[idx.len(), ..rest]`.
    pub fn select_outer(&self, idx: &[usize]) -> Result<Tensor, OpError> {
        let (&count, rest) = self
            .shape
            .split_first()
            .ok_or_else(|| OpError("a scalar has no first dim to select from".into()))?;
        if let Some(&bad) = idx.iter().find(|&&i| i >= count) {
            return Err(OpError(format!(
                "{:?} has no index {bad} in its first dim",
                self.shape
            )));
        }
        let each = self.numel() / count.max(1);
        fn gather<T: Clone>(v: &[T], idx: &[usize], each: usize) -> Vec<T> {
            let mut out = Vec::with_capacity(idx.len() * each);
            for &i in idx {
                out.extend_from_slice(&v[i * each..(i + 1) * each]);
            }
            out
        }
        let data = match &self.data {
            Data::F32(v) => Data::F32(gather(v, idx, each)),
            Data::F16(v) => Data::F16(gather(&v[..], idx, each).into()),
            Data::I32(v) => Data::I32(gather(v, idx, each)),
        };
        let mut shape = vec![idx.len()];
        shape.extend_from_slice(rest);
        Tensor::new(&shape, data)
    }

    /// The same data under another shape with the same element count.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Tensor, OpError> {
        if numel(shape) != self.numel() {
            return Err(OpError(format!(
                "cannot reshape {:?} into {shape:?}",
                self.shape
            )));
        }
        self.shape = shape.to_vec();
        // The int8 form is of the matrix in its old shape.
        self.int8 = None;
        Ok(self)
    }

    /// This weight matrix with its int8 form attached; fails unless the tensor is `[n, k]`
    /// with the form's n and k.
    pub fn with_int8(mut self, q: Arc<crate::quant::Int8Matrix>) -> Result<Tensor, OpError> {
        if self.shape != [q.n, q.k] {
            return Err(OpError(format!(
                "int8 form [{}, {}] does not fit a tensor of shape {:?}",
                q.n, q.k, self.shape
            )));
        }
        self.int8 = Some(q);
        Ok(self)
    }

    /// The int8 form of this weight matrix, when it has one.
    pub fn int8(&self) -> Option<&crate::quant::Int8Matrix> {
        self.int8.as_deref()
    }

    /// f16 storage widened to f32 (other dtypes returned unchanged).
    pub fn widen_f16(self) -> Tensor {
        match self.data {
            Data::F16(v) => {
                let mut out = vec![0f32; v.len()];
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[..], &mut out);
                Tensor {
                    shape: self.shape,
                    data: Data::F32(out),
                    int8: None,
                    initialized: Initialized::default(),
                }
            }
            _ => self,
        }
    }

    /// f32 storage rounded to f16 (to nearest, ties to even), the inverse of
    /// [`Tensor::widen_f16`]; errors on other dtypes.
    pub fn narrow_to_f16(&self) -> Result<Tensor, OpError> {
        let x = self.f32s()?;
        let mut out = vec![half::f16::ZERO; x.len()];
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut out[..], x);
        Tensor::new(&self.shape, Data::F16(out.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shortened_vector_comes_back_whole_and_only_to_the_tensor_that_shortened_it() {
        let values: Vec<f32> = (1..=6).map(|x| x as f32).collect();
        let t = Tensor::from_f32_prefix(&[2], values.clone()).unwrap();
        assert_eq!(t.f32s().unwrap(), &[1.0, 2.0]);
        assert_eq!(t, Tensor::from_f32(&[2], vec![1.0, 2.0]).unwrap());
        // A clone's vector is an allocation of its own: it comes back at its length.
        assert_eq!(t.clone().into_f32_lengthened().unwrap(), &[1.0, 2.0]);
        assert_eq!(t.into_f32_lengthened().unwrap(), values);
        // A reshape keeps the vector, and what is known of it.
        let r = Tensor::from_f32_prefix(&[2, 2], values.clone())
            .unwrap()
            .reshape(&[4])
            .unwrap();
        assert_eq!(r.into_f32_lengthened().unwrap(), values);
        // A tensor made whole knows nothing past its length; other dtypes give nothing.
        let whole = Tensor::from_f32(&[6], values.clone()).unwrap();
        assert_eq!(whole.into_f32_lengthened().unwrap(), values);
        assert!(Tensor::scalar_i32(3).into_f32_lengthened().is_none());
        let err = Tensor::from_f32_prefix(&[7], values)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds 6"), "{err}");
    }

    #[test]
    fn selecting_outer_entries_keeps_their_order_and_type() {
        let t = Tensor::from_f32(&[4, 2, 3], (0..24).map(|x| x as f32).collect()).unwrap();
        let s = t.select_outer(&[3, 1]).unwrap();
        assert_eq!(s.shape(), [2, 2, 3]);
        let want: Vec<f32> = (18..24).chain(6..12).map(|x| x as f32).collect();
        assert_eq!(s.f32s().unwrap(), &want[..]);
        let h = t.narrow_to_f16().unwrap().select_outer(&[0, 0]).unwrap();
        assert_eq!(h.dtype(), DType::F16);
        assert_eq!(h.shape(), [2, 2, 3]);
        assert_eq!(t.select_outer(&[]).unwrap().shape(), [0, 2, 3]);
        let err = t.select_outer(&[1, 4]).unwrap_err().to_string();
        assert!(err.contains("no index 4"), "{err}");
        assert!(Tensor::scalar_i32(1).select_outer(&[0]).is_err());
    }
}
