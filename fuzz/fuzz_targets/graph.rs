//! Graph files: `ModelFile::parse`, then every graph validated by `Graph::build` against
//! the standard operator registry; a parsed file must serialise to a parsable one.
#![no_main]

use amanuensis_runtime::{Graph, ModelFile};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static REGISTRY: amanuensis_runtime::Registry = amanuensis_operators::standard_registry();
}

fuzz_target!(|data: &[u8]| {
    amanuensis_fuzz::begin_input(data.len());
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(model) = ModelFile::parse(text, "fuzz.graph") else {
        return;
    };
    REGISTRY.with(|registry| {
        for g in &model.graphs {
            if let Ok(graph) = Graph::build(g, &model.weights, registry) {
                let _ = graph.op_counts();
            }
        }
    });
    let again = ModelFile::parse(&model.to_text(), "fuzz.graph (written back)")
        .expect("a graph file that parses is written back as one that parses");
    assert_eq!(again, model, "a graph file changes on a write and read");
});
