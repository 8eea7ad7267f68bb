//! `verify`: does a weight file provide every weight a graph file declares, with the
//! declared dtype and shape? Every mismatch is reported at once.

use amanuensis_runtime::weights::{check_declarations, list_tensors};
use amanuensis_runtime::ModelFile;
use std::path::Path;

/// Outcome of checking a weight file against a graph file.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    /// Weights the graph declares.
    pub declared: usize,
    /// Tensors in the weight file.
    pub stored: usize,
    /// One line per missing weight, wrong dtype or wrong shape.
    pub problems: Vec<String>,
    /// Tensors in the file that no graph declares (harmless, listed for information).
    pub unused: Vec<String>,
}

/// Checks `weights` against the declarations of `graph`.
pub fn verify(
    graph: &Path,
    weights: &Path,
) -> Result<VerifyReport, amanuensis_runtime::RuntimeError> {
    let file = ModelFile::load(graph)?;
    let stored = list_tensors(weights)?;
    let problems = check_declarations(&file.weights, &stored);
    let declared: std::collections::HashSet<&str> =
        file.weights.iter().map(|w| w.name.as_str()).collect();
    let unused = stored
        .iter()
        .filter(|t| !declared.contains(t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();
    Ok(VerifyReport {
        declared: file.weights.len(),
        stored: stored.len(),
        problems,
        unused,
    })
}
