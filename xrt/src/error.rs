//! Errors of setting up the XRT device.

use crate::manifest::ManifestError;
use crate::shim::ShimError;

/// Error setting up the real device or one of its kernels.
#[derive(Debug, thiserror::Error)]
pub enum XrtError {
    /// The manifest is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// This binary was built without the XRT shim.
    #[error("the NPU device is unavailable: this build has no XRT support ({0})")]
    NotBuilt(String),
    /// The XRT this binary was built against cannot drive the NPU.
    #[error("the NPU device is unavailable: {0}")]
    NoHwContext(String),
    /// Opening the device failed.
    #[error("opening NPU device {index} ({backend}): {source}{hint}")]
    Open {
        /// Device index.
        index: u32,
        /// The shim's description.
        backend: String,
        /// The shim error.
        source: ShimError,
        /// A hint about the likely cause (may be empty).
        hint: String,
    },
    /// Setting up one manifest entry failed.
    #[error("NPU kernel {label}: {reason}")]
    Kernel {
        /// "kernel (variant …)".
        label: String,
        /// What failed, naming files and XRT's message.
        reason: String,
    },
}
