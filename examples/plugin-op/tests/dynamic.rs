//! The example built as a shared library, loaded at run time through the ABI handshake,
//! and its graph run with the ops it registered.

mod common;

use amanuensis_runtime::plugin::{load_plugin, loaded_libraries};
use amanuensis_runtime::PluginError;
use common::*;
use std::path::PathBuf;

/// The cdylib cargo built for this test run: next to the test executable (`deps/`), or
/// uplifted one level up by `cargo build`.
fn plugin_library() -> PathBuf {
    let name = format!(
        "{}amanuensis_plugin_example{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps.join(&name), deps.parent().unwrap().join(&name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not next to {}: build it with `cargo build --release -p amanuensis-plugin-example`",
                exe.display()
            )
        })
}

#[test]
fn loaded_plugin_runs_the_graph_like_the_linked_one() {
    let path = plugin_library();
    let mut reg = amanuensis_operators::standard_registry();
    let info =
        load_plugin(&path, &mut reg).expect("the plugin built with this test passes the handshake");
    assert_eq!(info.name, "amanuensis-plugin-example");
    assert_eq!(info.version, "0.1.0");
    assert_eq!(info.path.as_deref(), Some(path.as_path()));
    assert_eq!(info.ops, ["linear_swish", "swish"]);
    assert_eq!(info.patterns, ["linear_swish"]);
    assert_eq!(reg.plugins(), std::slice::from_ref(&info));
    assert_eq!(
        reg.registered_by("swish"),
        Some("'amanuensis-plugin-example 0.1.0'")
    );
    let standard = amanuensis_operators::standard_registry().patterns().len();
    assert_eq!(reg.patterns().len(), standard + 1);
    assert_eq!(reg.patterns()[standard].name(), "linear_swish");
    assert!(loaded_libraries().contains(&path));

    let file = model_file();
    let x = input();
    let dynamic = run_cpu(&file.graphs[0], &file, &reg, &x);
    let linked = run_cpu(&file.graphs[0], &file, &registry(), &x);
    assert_eq!(dynamic.len(), 40 * 32);
    let differing = dynamic
        .iter()
        .zip(&linked)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differing, 0,
        "the loaded and the linked plugin disagree on {differing} outputs"
    );
    // And both agree with the f64 reference.
    let (want, scale) = mlp_f64(&file, x.f32s().unwrap());
    assert_close(&dynamic, &want, &scale, 1e-5, "loaded plugin vs f64");
}

#[test]
fn loading_the_plugin_twice_into_one_registry_names_both_and_changes_nothing() {
    let path = plugin_library();
    let mut reg = amanuensis_operators::standard_registry();
    load_plugin(&path, &mut reg).unwrap();
    let before: Vec<String> = reg.names().map(str::to_string).collect();
    let err = load_plugin(&path, &mut reg).unwrap_err();
    assert!(matches!(err, PluginError::Register { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "operator 'swish' is registered twice: first by 'amanuensis-plugin-example 0.1.0', \
             again by 'amanuensis-plugin-example 0.1.0'"
        ),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert_eq!(reg.names().map(str::to_string).collect::<Vec<_>>(), before);
    assert_eq!(reg.plugins().len(), 1);
    assert_eq!(
        reg.patterns().len(),
        amanuensis_operators::standard_registry().patterns().len() + 1
    );
}
