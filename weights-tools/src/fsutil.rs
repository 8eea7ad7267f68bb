//! Atomic file writes: a reader never sees a half-written output file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A failed atomic write: which step, on which file.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {path}: {source}")]
pub struct WriteError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
/// On failure the temporary file is removed and `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let io = |op, path: &Path, source| WriteError {
        op,
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(|e| io("create", dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| io("write", tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| io("sync", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| io("rename into", path, e.error))?;
    Ok(())
}
