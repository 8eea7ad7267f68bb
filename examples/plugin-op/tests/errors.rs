//! Errors a plugin author meets: an op nobody registered, and two plugins claiming one name.

mod common;

use amanuensis_plugin_example::{SwishDef, SwishPlugin};
use amanuensis_runtime::{Graph, Plugin, Registry, RuntimeError};
use common::*;

#[test]
fn unknown_op_names_the_node_the_op_and_the_nearest_registered() {
    let mut file = model_file();
    let act = file.graphs[0]
        .nodes
        .iter_mut()
        .find(|n| n.name == "act")
        .unwrap();
    act.op = "swsh".into();
    let err = Graph::build(&file.graphs[0], &file.weights, &registry()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, RuntimeError::Graph { ref node, .. } if node == "act"),
        "{err:?}"
    );
    assert!(
        msg.starts_with("graph 'mlp', node 'act': unknown operator 'swsh'; did you mean 'swish'?"),
        "{msg}"
    );
    // Every registered op is listed, the plugin's and the standard ones.
    let reg = registry();
    let all: Vec<&str> = reg.names().collect();
    assert!(all.contains(&"linear_swish") && all.contains(&"gelu"));
    assert_eq!(
        msg,
        format!("graph 'mlp', node 'act': unknown operator 'swsh'; did you mean 'swish'? (registered: {})", all.join(", "))
    );

    // Without the plugin the graph's own op is the unknown one, and the message says so.
    let file = model_file();
    let err = Graph::build(
        &file.graphs[0],
        &file.weights,
        &amanuensis_operators::standard_registry(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("graph 'mlp', node 'act': unknown operator 'swish'"),
        "{msg}"
    );
    assert!(!msg.contains("linear_swish"), "{msg}");
}

/// A second library that also defines `swish`.
struct OtherPlugin;

impl Plugin for OtherPlugin {
    fn name(&self) -> &'static str {
        "other-activations"
    }
    fn version(&self) -> &'static str {
        "2.1.0"
    }
    fn register(&self, registry: &mut Registry) -> Result<(), RuntimeError> {
        struct Mish;
        impl amanuensis_runtime::OpDef for Mish {
            fn name(&self) -> &str {
                "mish"
            }
            fn build(
                &self,
                _: &amanuensis_runtime::Attrs,
            ) -> Result<Box<dyn amanuensis_runtime::Operator>, amanuensis_runtime::OpError>
            {
                Err("not needed here".into())
            }
        }
        registry.register(Mish)?;
        registry.register(SwishDef)?;
        Ok(())
    }
}

#[test]
fn two_plugins_registering_one_name_fail_naming_both_and_leave_the_registry_unchanged() {
    let mut reg = registry();
    let before: Vec<String> = reg.names().map(str::to_string).collect();
    let err = reg.add_plugin(&OtherPlugin).unwrap_err();
    assert_eq!(
        err.to_string(),
        "operator registry: operator 'swish' is registered twice: first by \
         'amanuensis-plugin-example 0.1.0', again by 'other-activations 2.1.0'"
    );
    // All or nothing: `mish`, registered before the clash, is not kept.
    assert_eq!(reg.names().map(str::to_string).collect::<Vec<_>>(), before);
    assert!(reg.get("mish").is_none());
    assert_eq!(reg.plugins().len(), 1);

    // The same clash in the other order names them the other way round.
    let mut reg = amanuensis_operators::standard_registry();
    reg.add_plugin(&OtherPlugin).unwrap();
    let err = reg.add_plugin(&SwishPlugin).unwrap_err().to_string();
    assert!(
        err.ends_with(
            "first by 'other-activations 2.1.0', again by 'amanuensis-plugin-example 0.1.0'"
        ),
        "{err}"
    );
}

#[test]
fn a_pattern_registered_twice_names_both_plugins() {
    struct Copycat;
    impl Plugin for Copycat {
        fn name(&self) -> &'static str {
            "copycat"
        }
        fn version(&self) -> &'static str {
            "0.0.1"
        }
        fn register(&self, registry: &mut Registry) -> Result<(), RuntimeError> {
            registry.register_pattern(amanuensis_plugin_example::LinearSwishPattern)
        }
    }
    let mut reg = registry();
    let err = reg.add_plugin(&Copycat).unwrap_err().to_string();
    assert_eq!(
        err,
        "operator registry: fusion pattern 'linear_swish' is registered twice: first by \
         'amanuensis-plugin-example 0.1.0', again by 'copycat 0.0.1'"
    );
    assert_eq!(
        reg.patterns().len(),
        amanuensis_operators::standard_registry().patterns().len() + 1
    );
}
