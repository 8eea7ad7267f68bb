//! Where a caller is when it calls XRT: phase, graph and window, shared between the device
//! that sets them and the call log (and any shim) that tags its records with them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// Which part of the work a call belongs to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Opening the device, loading xclbins and weights, building runs.
    #[default]
    Load,
    /// Executing a graph.
    Run,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Load => "load",
            Phase::Run => "run",
        })
    }
}

/// Where the caller is when a call is made: phase, graph and window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallScope {
    /// The phase.
    pub phase: Phase,
    /// The graph being run (e.g. `encoder`), if set.
    pub graph: Option<Arc<str>>,
    /// The index of the 30-s audio window being processed, if set.
    pub window: Option<u64>,
}

/// The shared, cheaply cloned context a [`LoggingShim`] tags its records with; the device
/// and the application update it as they go (all clones see the same values).
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    inner: Arc<Mutex<CallScope>>,
}

impl CallContext {
    /// A context in phase `load` with no graph or window.
    pub fn new() -> CallContext {
        CallContext::default()
    }

    fn lock(&self) -> MutexGuard<'_, CallScope> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the phase.
    pub fn set_phase(&self, phase: Phase) {
        self.lock().phase = phase;
    }

    /// Sets (or with `None` clears) the graph name.
    pub fn set_graph(&self, graph: Option<&str>) {
        self.lock().graph = graph.map(Arc::from);
    }

    /// Sets (or with `None` clears) the window index.
    pub fn set_window(&self, window: Option<u64>) {
        self.lock().window = window;
    }

    /// The current values.
    pub fn scope(&self) -> CallScope {
        self.lock().clone()
    }
}
