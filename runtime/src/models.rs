//! Where model directories are found: shared by every model on the runtime (Whisper,
//! Silero VAD), so that one setting moves them all.

use std::path::{Path, PathBuf};

/// Environment variable naming the folder that holds model directories.
pub const MODELS_ENV: &str = "AMANUENSIS_MODELS";

/// Folders searched for model directories, in order: `$AMANUENSIS_MODELS`, `./models`,
/// and the `models/` folder of the source tree this binary was built from.
pub fn model_search_path() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(MODELS_ENV) {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from("models"));
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"));
    dirs
}
