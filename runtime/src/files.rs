//! Reading a model's files whole, safely: a path that names a device, a FIFO or a
//! directory (`/dev/zero`, a symlink to one) is refused before it is opened, and a file
//! over the caller's limit is refused before it is read, so a bad path is an error, not an
//! allocation that grows until the process is killed or an open that blocks for good.

use std::io::{Error, ErrorKind, Read};
use std::path::Path;

/// No limit beyond the file's own size: for weights, whose size the model decides.
pub const NO_LIMIT: u64 = u64::MAX;

/// Largest graph, `config.json` or other JSON file of a model: 256 MB (whisper-base's
/// graph is about 100 KB).
pub const MAX_TEXT_FILE: u64 = 256 << 20;

/// The bytes of the regular file at `path`, at most `max` of them. The errors are
/// `std::io::Error`s (kind `InvalidInput` for the two refusals) so that every caller keeps
/// its own error type, which names the path.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    // `metadata` follows symlinks and does not open: opening a FIFO would wait for a writer.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a directory, device or FIFO)",
        ));
    }
    if meta.len() > max {
        return Err(too_large(meta.len(), max));
    }
    let file = std::fs::File::open(path)?;
    // Reserve what the file says, but read through `take`: a file that grows meanwhile
    // (or a filesystem that reports 0) still stops at the limit.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64, max));
    }
    Ok(bytes)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_regular(path, max)?)
        .map_err(|e| Error::new(ErrorKind::InvalidData, format!("not UTF-8 text: {e}")))
}

fn too_large(len: u64, max: u64) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("{len} bytes, over the limit of {max} for such a file"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_and_oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_regular(dir.path(), NO_LIMIT).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        #[cfg(unix)]
        {
            let err = read_regular(Path::new("/dev/zero"), NO_LIMIT).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        let f = dir.path().join("f.json");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(read_regular(&f, 10).unwrap(), b"0123456789");
        let err = read_regular(&f, 9).unwrap_err();
        assert!(
            err.to_string().contains("10 bytes, over the limit of 9"),
            "{err}"
        );
        assert_eq!(read_regular_text(&f, 10).unwrap(), "0123456789");
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        assert!(read_regular_text(&f, 10).is_err());
    }
}
