//! Atomic file writes: a reader never sees a half-written output file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::convert::ConvertError;

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
/// On failure the temporary file is removed and `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ConvertError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{file_name}.partial-{}", std::process::id()));
    let result = (|| -> Result<(), (&'static str, PathBuf, std::io::Error)> {
        let mut f = std::fs::File::create(&tmp).map_err(|e| ("create", tmp.clone(), e))?;
        f.write_all(bytes).map_err(|e| ("write", tmp.clone(), e))?;
        f.sync_all().map_err(|e| ("sync", tmp.clone(), e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| ("rename into", path.to_path_buf(), e))
    })();
    result.map_err(|(op, p, source)| {
        let _ = std::fs::remove_file(&tmp);
        ConvertError::Io {
            op,
            path: p,
            source,
        }
    })
}
