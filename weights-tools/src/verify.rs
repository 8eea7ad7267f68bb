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

/// Outcome of checking an int8 weight file against the weights it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Report {
    /// Int8 forms in the file.
    pub forms: usize,
    /// One line per form that is not the quantization of its weight.
    pub problems: Vec<String>,
}

/// Checks every int8 form of `int8` (a `model.int8.safetensors`) against the weight of
/// the same name in `weights`: the form must be exactly what quantizing that weight gives
/// now (values, scales, column sums), for a weight `graph` declares with that shape.
pub fn verify_int8(
    graph: &Path,
    weights: &Path,
    int8: &Path,
) -> Result<Int8Report, amanuensis_runtime::RuntimeError> {
    let file = ModelFile::load(graph)?;
    let store = amanuensis_runtime::WeightStore::load(weights, &file.weights)?;
    let (forms, _meta) = amanuensis_operators::quantize::load_int8(int8)?;
    let mut names: Vec<&String> = forms.keys().collect();
    names.sort();
    let mut problems = Vec::new();
    for name in names {
        let q = &forms[name];
        let Some(t) = store.get(name) else {
            problems.push(format!(
                "'{name}': no such weight in the graph's declarations"
            ));
            continue;
        };
        if t.shape() != [q.n, q.k] {
            problems.push(format!(
                "'{name}': int8 form is [{}, {}], the weight {:?}",
                q.n,
                q.k,
                t.shape()
            ));
            continue;
        }
        match amanuensis_operators::quantize::quantize_matrix(t) {
            Ok(fresh) if fresh == **q => {}
            Ok(fresh) => {
                let values = fresh
                    .packed()
                    .iter()
                    .zip(q.packed())
                    .filter(|(a, b)| a != b)
                    .count();
                let scales = fresh
                    .scales
                    .iter()
                    .zip(&q.scales)
                    .filter(|(a, b)| a != b)
                    .count();
                problems.push(format!(
                    "'{name}': not the quantization of the weight ({values} values and {scales} scales differ)"
                ));
            }
            Err(e) => problems.push(format!("'{name}': {}", e.0)),
        }
    }
    Ok(Int8Report {
        forms: forms.len(),
        problems,
    })
}
