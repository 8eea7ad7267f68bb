//! An operator plugin for the amanuensis runtime, written as a third party would: it
//! depends only on the public crates and registers through the same door as the standard
//! operators.
//!
//! It adds `swish` (y = x·σ(x)), the fused `linear_swish` (swish of a linear layer), both
//! with a CPU kernel and an NPU kernel, and the fusion pattern that rewrites the standard
//! `linear` followed by `swish` into `linear_swish`. `docs/plugins.md` walks through it.

pub mod linear_swish;
pub mod swish;

use amanuensis_runtime::{Plugin, Registry, RuntimeError};

pub use linear_swish::{LinearSwishDef, LinearSwishNpu, LinearSwishPattern};
pub use swish::{swish_cpu, swish_exact, SwishDef, SwishNpu};

/// The plugin: its ops and its fusion pattern.
pub struct SwishPlugin;

impl Plugin for SwishPlugin {
    fn name(&self) -> &'static str {
        env!("CARGO_PKG_NAME")
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn register(&self, registry: &mut Registry) -> Result<(), RuntimeError> {
        registry.register(SwishDef)?;
        registry.register(LinearSwishDef)?;
        registry.register_pattern(LinearSwishPattern)?;
        Ok(())
    }
}

// The C descriptor and the registration entry that `load_plugin` looks for.
amanuensis_runtime::export_plugin!(SwishPlugin);
