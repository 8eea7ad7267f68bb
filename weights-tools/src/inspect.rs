//! `weights-tool inspect`: a per-tensor listing of a safetensors file or a CT2 `model.bin`.

use amanuensis_runtime::files::{read_regular, NO_LIMIT};
use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::ct2::{Ct2Error, Ct2Model, MAX_BINARY_VERSION};
use crate::st::{SafetensorsFile, SafetensorsReadError};

/// File formats `inspect` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A safetensors file.
    Safetensors,
    /// A CTranslate2 `model.bin`.
    Ct2,
}

/// Why a file could not be inspected.
#[derive(Debug, Error)]
pub enum InspectError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Neither format matched.
    #[error("{path}: neither a safetensors file nor a CTranslate2 model.bin")]
    UnknownFormat { path: PathBuf },
    /// A corrupt safetensors file.
    #[error(transparent)]
    Safetensors(#[from] SafetensorsReadError),
    /// A corrupt CT2 file.
    #[error(transparent)]
    Ct2(#[from] Ct2Error),
}

/// One listed tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectEntry {
    /// Tensor name.
    pub name: String,
    /// Element type name.
    pub dtype: String,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<usize>,
    /// Payload bytes.
    pub bytes: usize,
    /// Extra information: the value of an integer scalar.
    pub note: Option<String>,
}

/// Everything `inspect` prints.
#[derive(Debug, Clone)]
pub struct InspectReport {
    /// The inspected file.
    pub path: PathBuf,
    /// Its format.
    pub kind: FileKind,
    /// File size.
    pub file_bytes: usize,
    /// Header facts (CT2 version/spec; safetensors `__metadata__`), as key/value pairs.
    pub header: Vec<(String, String)>,
    /// Tensors in file order.
    pub entries: Vec<InspectEntry>,
    /// CT2 aliases `(alias, target)`.
    pub aliases: Vec<(String, String)>,
}

impl InspectReport {
    /// Sum of payload bytes.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes as u64).sum()
    }

    /// Sum of element counts.
    pub fn total_elements(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| e.shape.iter().product::<usize>() as u64)
            .sum()
    }
}

/// Guesses the format from the first bytes, then the extension.
pub fn sniff(bytes: &[u8], path: &Path) -> Option<FileKind> {
    if bytes.len() >= 9 && bytes[8] == b'{' {
        return Some(FileKind::Safetensors);
    }
    if bytes.len() >= 4 {
        let v = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if (1..=MAX_BINARY_VERSION).contains(&v) {
            return Some(FileKind::Ct2);
        }
    }
    // Fall back on the name so a damaged file still gets its format's precise error.
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => Some(FileKind::Safetensors),
        Some("bin") => Some(FileKind::Ct2),
        _ => None,
    }
}

/// Reads and lists `path`.
pub fn inspect_path(path: &Path) -> Result<InspectReport, InspectError> {
    let bytes = read_regular(path, NO_LIMIT).map_err(|source| InspectError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match sniff(&bytes, path) {
        Some(FileKind::Safetensors) => inspect_safetensors(bytes, path),
        Some(FileKind::Ct2) => inspect_ct2(&bytes, path),
        None => Err(InspectError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}

fn inspect_safetensors(bytes: Vec<u8>, path: &Path) -> Result<InspectReport, InspectError> {
    let file_bytes = bytes.len();
    let f = SafetensorsFile::from_bytes(bytes, path)?;
    let mut header = vec![("header_bytes".to_string(), f.header_len.to_string())];
    header.extend(f.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
    let entries = f
        .tensors
        .iter()
        .map(|t| InspectEntry {
            name: t.name.clone(),
            dtype: format!("{:?}", t.dtype).to_lowercase(),
            shape: t.shape.clone(),
            bytes: t.range.len(),
            note: None,
        })
        .collect();
    Ok(InspectReport {
        path: path.to_path_buf(),
        kind: FileKind::Safetensors,
        file_bytes,
        header,
        entries,
        aliases: vec![],
    })
}

fn inspect_ct2(bytes: &[u8], path: &Path) -> Result<InspectReport, InspectError> {
    let m = Ct2Model::parse(bytes, &path.display().to_string())?;
    let mut header = vec![("binary_version".to_string(), m.binary_version.to_string())];
    if let (Some(s), Some(r)) = (&m.spec_name, m.spec_revision) {
        header.push(("spec".to_string(), format!("{s} revision {r}")));
    }
    let entries = m
        .variables
        .iter()
        .map(|v| InspectEntry {
            name: v.name.clone(),
            dtype: v.dtype.name().to_string(),
            shape: v.shape.clone(),
            bytes: v.data.len(),
            note: v.scalar_int().map(|x| format!("value {x}")),
        })
        .collect();
    let aliases = m
        .aliases
        .iter()
        .map(|a| (a.alias.clone(), a.target.clone()))
        .collect();
    Ok(InspectReport {
        path: path.to_path_buf(),
        kind: FileKind::Ct2,
        file_bytes: bytes.len(),
        header,
        entries,
        aliases,
    })
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FileKind::Safetensors => "safetensors",
            FileKind::Ct2 => "CTranslate2 model.bin",
        };
        writeln!(
            f,
            "{}: {kind}, {} bytes",
            self.path.display(),
            self.file_bytes
        )?;
        for (k, v) in &self.header {
            writeln!(f, "  {k}: {v}")?;
        }
        let width = self.entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
        for e in &self.entries {
            let shape = if e.shape.is_empty() {
                "scalar".to_string()
            } else {
                format!("{:?}", e.shape)
            };
            write!(
                f,
                "{:<width$}  {:<8}  {:<16}  {:>10}",
                e.name, e.dtype, shape, e.bytes
            )?;
            match &e.note {
                Some(n) => writeln!(f, "  {n}")?,
                None => writeln!(f)?,
            }
        }
        for (a, t) in &self.aliases {
            writeln!(f, "alias {a} -> {t}")?;
        }
        writeln!(
            f,
            "total: {} tensors, {} elements, {} bytes{}",
            self.entries.len(),
            self.total_elements(),
            self.total_bytes(),
            if self.aliases.is_empty() {
                String::new()
            } else {
                format!(", {} aliases", self.aliases.len())
            }
        )
    }
}
