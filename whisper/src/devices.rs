//! Which device runs the graphs: the process's device registry (the host CPU, the NPU
//! timing simulator, the real NPU and its dry run), the user's choice of one, and the
//! plans of a model's graphs for it. A device is opened once per process and shared by
//! every session of every model.

use crate::error::{Error, Result};
use amanuensis_runtime::device::{Device, DeviceRegistry, DeviceStatus, HOST};
use amanuensis_runtime::npu::{config_string, NpuOptions, NpuParams};
use amanuensis_runtime::schedule::{self, Plan, SchedulerOptions};
use amanuensis_runtime::{Graph, ModelFile, Registry};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Makes the device instead of the registry (tests, embedders).
pub type DeviceFactory = Arc<dyn Fn() -> Result<Arc<dyn Device>> + Send + Sync>;

/// The devices of this build, registered once per process.
pub fn registry() -> &'static DeviceRegistry {
    static REG: OnceLock<DeviceRegistry> = OnceLock::new();
    REG.get_or_init(|| {
        let mut r = DeviceRegistry::with_host();
        amanuensis_runtime::npu::register_sim(&mut r).expect("npu-sim registers once");
        amanuensis_xrt::register_devices(&mut r).expect("the XRT devices register once");
        r
    })
}

/// Which device runs the graphs, and how the scheduler treats it.
#[derive(Clone)]
pub struct DeviceSpec {
    /// A registered device (`cpu`, `npu-sim`, `npu`, `npu-dry`, …); resolve `auto` with
    /// [`DeviceSpec::resolve_auto`] first.
    pub device: String,
    /// The NPU's parameter set (the simulator's timing; the cost model of fusion scores).
    pub params: NpuParams,
    /// How an NPU device schedules its runs.
    pub npu: NpuOptions,
    /// Scheduler passes and their switches.
    pub options: SchedulerOptions,
    /// Builds the device instead of the registry (tests, embedders).
    pub factory: Option<DeviceFactory>,
    /// What the CPU computes linear layers in (the `cpu` device only).
    pub compute: crate::compute::ComputeType,
}

impl std::fmt::Debug for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSpec")
            .field("device", &self.device)
            .field("params", &self.params.name)
            .field("npu", &self.npu)
            .field("options", &self.options)
            .field("compute", &self.compute)
            .finish()
    }
}

impl Default for DeviceSpec {
    fn default() -> Self {
        DeviceSpec {
            device: HOST.into(),
            params: NpuParams::phoenix(),
            npu: NpuOptions::default(),
            options: SchedulerOptions::default(),
            factory: None,
            compute: Default::default(),
        }
    }
}

impl DeviceSpec {
    /// The simulated Phoenix NPU with every scheduler pass on.
    pub fn npu_sim() -> Self {
        DeviceSpec {
            device: "npu-sim".into(),
            ..Default::default()
        }
    }

    /// The process's shared instance of this device.
    pub fn open(&self) -> Result<Arc<dyn Device>> {
        if let Some(f) = &self.factory {
            return f();
        }
        // A parameter set of its own (say a what-if of the tile memory) is not a
        // registered configuration: that simulator is made for this spec alone.
        if self.device == "npu-sim"
            && NpuParams::by_name(self.params.name).as_ref() != Some(&self.params)
        {
            return Ok(Arc::new(amanuensis_runtime::npu::NpuSim::with_options(
                self.params.clone(),
                self.npu,
            )));
        }
        let key = if self.device == HOST {
            HOST.to_string()
        } else {
            format!("{}:{}", self.device, config_string(&self.params, &self.npu))
        };
        registry()
            .open(&key)
            .map(|d| d.device)
            .map_err(|reason| Error::Device {
                device: self.device.clone(),
                reason,
            })
    }

    /// Whether the graphs are planned for a device other than the host.
    pub fn planned(&self) -> bool {
        self.device != HOST || self.factory.is_some()
    }

    /// Turns `auto` into the first usable accelerator, else `cpu`; returns the line to
    /// show the user about the choice.
    pub fn resolve_auto(&mut self) -> Option<String> {
        if self.device != "auto" {
            return None;
        }
        let (pick, passed) = registry().pick_auto();
        self.device = pick.clone();
        Some(if pick != HOST {
            format!("device: {pick}")
        } else if passed.is_empty() {
            "device: cpu".to_string()
        } else {
            // The reasons are long (driver, firmware, permissions): `amanuensis devices`
            // and `-v` show them; the default line stays short.
            for (name, st) in &passed {
                tracing::info!(reasons = %st.details.join("; "), "{name} unavailable");
            }
            "device: cpu (no NPU found; `amanuensis devices` says why)".to_string()
        })
    }

    /// Timing parameters when the device is simulated.
    pub fn sim_params(&self) -> Option<&NpuParams> {
        (self.device == "npu-sim").then_some(&self.params)
    }
}

/// Every registered device with its probe's status.
pub fn device_statuses() -> Vec<(String, String, DeviceStatus)> {
    registry()
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.summary.clone(), e.probe()))
        .collect()
}

/// Validates every graph of a file against a registry (each graph is built once).
pub fn validate_graphs(file: &ModelFile, registry: &Registry) -> Result<Vec<Graph>> {
    file.graphs
        .iter()
        .map(|g| Graph::build(g, &file.weights, registry).map_err(Error::from))
        .collect()
}

/// Plans every graph of a file for a device.
pub fn plan_graphs(file: &ModelFile, registry: &Registry, spec: &DeviceSpec) -> Result<Vec<Plan>> {
    let dev = spec.open()?;
    plan_built(
        validate_graphs(file, registry)?,
        registry,
        dev.as_ref(),
        &spec.options,
    )
}

/// Plans already validated graphs for a device.
pub fn plan_built(
    graphs: Vec<Graph>,
    registry: &Registry,
    device: &dyn Device,
    options: &SchedulerOptions,
) -> Result<Vec<Plan>> {
    graphs
        .into_iter()
        .map(|g| schedule::plan(g, registry, device, options).map_err(Error::from))
        .collect()
}

/// Where `--xrt-log` writes the XRT call log of the process (set before the NPU device
/// is first opened).
pub fn set_xrt_log(path: Option<PathBuf>) -> Result<()> {
    amanuensis_xrt::set_call_log(path).map_err(|reason| Error::Device {
        device: "npu".into(),
        reason,
    })
}
