//! Bounds-checked reader of CTranslate2 `model.bin` files (binary versions 1 to 6).
//!
//! The whole file is parsed from a byte slice; variable payloads are borrowed from it, so
//! parsing allocates nothing proportional to sizes read from the file. Every read is checked
//! against the bytes that remain and a failure names the byte offset and what was being
//! read. See `docs/weights.md` for the layout.

use std::collections::HashMap;
use std::fmt;

use thiserror::Error;

/// Highest `model.bin` binary version this reader understands.
pub const MAX_BINARY_VERSION: u32 = 6;

/// Element type of a CT2 variable (ids follow CT2's `DataType` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ct2DType {
    /// IEEE binary32.
    F32,
    /// Signed 8-bit integer (also booleans and enums).
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
}

impl Ct2DType {
    /// Maps a binary-version-4+ dtype id to a type.
    pub fn from_id(id: u8) -> Option<Ct2DType> {
        Some(match id {
            0 => Ct2DType::F32,
            1 => Ct2DType::I8,
            2 => Ct2DType::I16,
            3 => Ct2DType::I32,
            4 => Ct2DType::F16,
            5 => Ct2DType::BF16,
            _ => return None,
        })
    }

    /// The dtype id written by binary versions 4+.
    pub fn id(self) -> u8 {
        match self {
            Ct2DType::F32 => 0,
            Ct2DType::I8 => 1,
            Ct2DType::I16 => 2,
            Ct2DType::I32 => 3,
            Ct2DType::F16 => 4,
            Ct2DType::BF16 => 5,
        }
    }

    /// Maps a binary-version-1..3 item size to a type (those versions knew only these three).
    pub fn from_legacy_item_size(size: u8) -> Option<Ct2DType> {
        Some(match size {
            4 => Ct2DType::F32,
            2 => Ct2DType::I16,
            1 => Ct2DType::I8,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn item_size(self) -> usize {
        match self {
            Ct2DType::I8 => 1,
            Ct2DType::I16 | Ct2DType::F16 | Ct2DType::BF16 => 2,
            Ct2DType::F32 | Ct2DType::I32 => 4,
        }
    }

    /// Short lower-case name (`float16`, `int8`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Ct2DType::F32 => "float32",
            Ct2DType::I8 => "int8",
            Ct2DType::I16 => "int16",
            Ct2DType::I32 => "int32",
            Ct2DType::F16 => "float16",
            Ct2DType::BF16 => "bfloat16",
        }
    }
}

impl fmt::Display for Ct2DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One variable of a `model.bin`, its payload borrowed from the file bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ct2Variable<'a> {
    /// Slash-separated name, e.g. `encoder/conv1/weight`.
    pub name: String,
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: Ct2DType,
    /// Byte offset of the payload in the file.
    pub offset: usize,
    /// Raw little-endian payload (`product(shape) * item_size` bytes, unaligned).
    pub data: &'a [u8],
}

impl Ct2Variable<'_> {
    /// Number of elements (1 for a scalar).
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Value of a rank-0 integer variable (int8/int16/int32), `None` otherwise.
    pub fn scalar_int(&self) -> Option<i64> {
        if !self.shape.is_empty() {
            return None;
        }
        let d = self.data;
        match self.dtype {
            Ct2DType::I8 => Some(i64::from(i8::from_le_bytes([*d.first()?]))),
            Ct2DType::I16 => Some(i64::from(i16::from_le_bytes(d.get(..2)?.try_into().ok()?))),
            Ct2DType::I32 => Some(i64::from(i32::from_le_bytes(d.get(..4)?.try_into().ok()?))),
            _ => None,
        }
    }
}

/// An alias entry: `alias` names the same data as `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ct2Alias {
    /// The name that has no payload of its own.
    pub alias: String,
    /// The stored variable it refers to.
    pub target: String,
}

/// A parsed `model.bin`.
#[derive(Debug, Clone)]
pub struct Ct2Model<'a> {
    /// Binary format version (1..=6).
    pub binary_version: u32,
    /// Spec name (`WhisperSpec`), present from binary version 2.
    pub spec_name: Option<String>,
    /// Spec revision, present from binary version 2.
    pub spec_revision: Option<u32>,
    /// Variables in file order.
    pub variables: Vec<Ct2Variable<'a>>,
    /// Alias table (binary version 3+; empty before).
    pub aliases: Vec<Ct2Alias>,
    index: HashMap<String, usize>,
}

/// Why a `model.bin` could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Ct2Error {
    /// The file ends before a field is complete.
    #[error("{file}: truncated at byte {offset} while reading {what} (needs {needed} bytes, {left} left)")]
    Truncated {
        file: String,
        offset: usize,
        what: String,
        needed: u64,
        left: usize,
    },
    /// The binary version is outside 1..=6.
    #[error("{file}: unsupported binary version {version} (this reader supports 1..={MAX_BINARY_VERSION})")]
    UnsupportedVersion { file: String, version: u32 },
    /// A length-prefixed string is malformed.
    #[error("{file}: bad string at byte {offset} while reading {what}: {reason}")]
    BadString {
        file: String,
        offset: usize,
        what: String,
        reason: String,
    },
    /// A dtype id (version 4+) is not known.
    #[error("{file}: unknown dtype id {id} at byte {offset} for '{name}'")]
    UnknownDType {
        file: String,
        offset: usize,
        name: String,
        id: u8,
    },
    /// An item size (versions 1..3) is not 1, 2 or 4.
    #[error("{file}: unsupported item size {size} at byte {offset} for '{name}'")]
    UnknownItemSize {
        file: String,
        offset: usize,
        name: String,
        size: u8,
    },
    /// The declared payload size disagrees with the shape and dtype.
    #[error("{file}: size of '{name}' at byte {offset} is inconsistent: header declares {declared} bytes but shape {shape:?} of {dtype} needs {expected}")]
    SizeMismatch {
        file: String,
        offset: usize,
        name: String,
        shape: Vec<usize>,
        dtype: Ct2DType,
        declared: u64,
        expected: String,
    },
    /// Two variables share a name.
    #[error("{file}: duplicate variable '{name}' at byte {offset}")]
    DuplicateVariable {
        file: String,
        offset: usize,
        name: String,
    },
    /// An alias refers to a variable that does not exist, or shadows one that does.
    #[error("{file}: bad alias '{alias}' -> '{target}' at byte {offset}: {reason}")]
    BadAlias {
        file: String,
        offset: usize,
        alias: String,
        target: String,
        reason: String,
    },
    /// Bytes remain after the last expected field.
    #[error(
        "{file}: {count} unexpected trailing bytes at byte {offset} after the end of the model"
    )]
    TrailingBytes {
        file: String,
        offset: usize,
        count: usize,
    },
}

/// Cursor over the file bytes; every read is checked against what remains.
struct Reader<'a, 'f> {
    bytes: &'a [u8],
    pos: usize,
    file: &'f str,
}

impl<'a> Reader<'a, '_> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], Ct2Error> {
        let left = self.left();
        match usize::try_from(n) {
            Ok(n) if n <= left => {
                let s = &self.bytes[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => Err(Ct2Error::Truncated {
                file: self.file.to_string(),
                offset: self.pos,
                what: what(),
                needed: n,
                left,
            }),
        }
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8, Ct2Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16, Ct2Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, Ct2Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `u16 n; u8 bytes[n]` where the last byte is a NUL terminator.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, Ct2Error> {
        let start = self.pos;
        let len_what = || format!("length of {}", what());
        let n = self.u16(&len_what)?;
        let file = self.file;
        let bad = |reason: &str| Ct2Error::BadString {
            file: file.to_string(),
            offset: start,
            what: what(),
            reason: reason.to_string(),
        };
        if n == 0 {
            return Err(bad("length 0 (a string holds at least its NUL terminator)"));
        }
        let raw = self.take(u64::from(n), what)?;
        let (text, nul) = raw.split_at(raw.len() - 1);
        if nul[0] != 0 {
            return Err(Ct2Error::BadString {
                file: file.to_string(),
                offset: start,
                what: what(),
                reason: format!(
                    "missing NUL terminator (last of {n} bytes is 0x{:02x})",
                    nul[0]
                ),
            });
        }
        if text.contains(&0) {
            return Err(bad("embedded NUL byte"));
        }
        match std::str::from_utf8(text) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(bad("not valid UTF-8")),
        }
    }
}

impl<'a> Ct2Model<'a> {
    /// Parses a whole `model.bin`; `file` labels error messages (usually the path).
    pub fn parse(bytes: &'a [u8], file: &str) -> Result<Ct2Model<'a>, Ct2Error> {
        let mut r = Reader {
            bytes,
            pos: 0,
            file,
        };
        let binary_version = r.u32(&|| "binary version".to_string())?;
        if !(1..=MAX_BINARY_VERSION).contains(&binary_version) {
            return Err(Ct2Error::UnsupportedVersion {
                file: file.to_string(),
                version: binary_version,
            });
        }
        let (spec_name, spec_revision) = if binary_version >= 2 {
            let name = r.string(&|| "spec name".to_string())?;
            let revision = r.u32(&|| "spec revision".to_string())?;
            (Some(name), Some(revision))
        } else {
            (None, None)
        };
        let count = r.u32(&|| "variable count".to_string())?;

        // No capacity from `count`: it is untrusted, and growth is bounded by what parses.
        let mut variables: Vec<Ct2Variable<'a>> = Vec::new();
        let mut index = HashMap::new();
        for i in 0..count {
            let var_start = r.pos;
            let name = r.string(&|| format!("name of variable #{i}"))?;
            let rank = r.u8(&|| format!("rank of '{name}'"))?;
            let mut shape = Vec::with_capacity(usize::from(rank));
            for k in 0..rank {
                let d = r.u32(&|| format!("dimension {k} of '{name}'"))?;
                // u32 always fits usize on the 32/64-bit targets this builds for.
                shape.push(d as usize);
            }
            let (dtype, declared_bytes) = if binary_version >= 4 {
                let at = r.pos;
                let id = r.u8(&|| format!("dtype of '{name}'"))?;
                let dtype = Ct2DType::from_id(id).ok_or_else(|| Ct2Error::UnknownDType {
                    file: file.to_string(),
                    offset: at,
                    name: name.clone(),
                    id,
                })?;
                let nb = r.u32(&|| format!("byte count of '{name}'"))?;
                (dtype, u64::from(nb))
            } else {
                let at = r.pos;
                let size = r.u8(&|| format!("item size of '{name}'"))?;
                let dtype = Ct2DType::from_legacy_item_size(size).ok_or_else(|| {
                    Ct2Error::UnknownItemSize {
                        file: file.to_string(),
                        offset: at,
                        name: name.clone(),
                        size,
                    }
                })?;
                let ne = r.u32(&|| format!("element count of '{name}'"))?;
                // u32 * 4 cannot overflow u64.
                (dtype, u64::from(ne) * dtype.item_size() as u64)
            };
            let expected = shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
                .and_then(|n| n.checked_mul(dtype.item_size() as u64));
            if expected != Some(declared_bytes) {
                return Err(Ct2Error::SizeMismatch {
                    file: file.to_string(),
                    offset: var_start,
                    name,
                    shape,
                    dtype,
                    declared: declared_bytes,
                    expected: match expected {
                        Some(e) => e.to_string(),
                        None => "more than 2^64".to_string(),
                    },
                });
            }
            let offset = r.pos;
            let data = r.take(declared_bytes, &|| format!("payload of '{name}'"))?;
            if index.contains_key(&name) {
                return Err(Ct2Error::DuplicateVariable {
                    file: file.to_string(),
                    offset: var_start,
                    name,
                });
            }
            index.insert(name.clone(), variables.len());
            variables.push(Ct2Variable {
                name,
                shape,
                dtype,
                offset,
                data,
            });
        }

        let mut aliases = Vec::new();
        if binary_version >= 3 {
            let n = r.u32(&|| "alias count".to_string())?;
            for i in 0..n {
                let at = r.pos;
                let alias = r.string(&|| format!("name of alias #{i}"))?;
                let target = r.string(&|| format!("target of alias '{alias}'"))?;
                let reason = if index.contains_key(&alias) {
                    Some("the alias name is also a stored variable")
                } else if !index.contains_key(&target) {
                    Some("the target is not a stored variable")
                } else if aliases.iter().any(|a: &Ct2Alias| a.alias == alias) {
                    Some("the alias is defined twice")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(Ct2Error::BadAlias {
                        file: file.to_string(),
                        offset: at,
                        alias,
                        target,
                        reason: reason.to_string(),
                    });
                }
                aliases.push(Ct2Alias { alias, target });
            }
        }
        if r.left() != 0 {
            return Err(Ct2Error::TrailingBytes {
                file: file.to_string(),
                offset: r.pos,
                count: r.left(),
            });
        }
        Ok(Ct2Model {
            binary_version,
            spec_name,
            spec_revision,
            variables,
            aliases,
            index,
        })
    }

    /// A stored variable by exact name (aliases are not followed).
    pub fn variable(&self, name: &str) -> Option<&Ct2Variable<'a>> {
        self.index.get(name).map(|&i| &self.variables[i])
    }

    /// The target of an alias, if `name` is one.
    pub fn alias_target(&self, name: &str) -> Option<&str> {
        self.aliases
            .iter()
            .find(|a| a.alias == name)
            .map(|a| a.target.as_str())
    }

    /// A variable by name, following an alias to its target.
    pub fn resolve(&self, name: &str) -> Option<&Ct2Variable<'a>> {
        self.variable(name)
            .or_else(|| self.variable(self.alias_target(name)?))
    }

    /// Total payload bytes of the stored variables.
    pub fn payload_bytes(&self) -> u64 {
        self.variables.iter().map(|v| v.data.len() as u64).sum()
    }
}
