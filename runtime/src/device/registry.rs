//! The device registry: a name maps to a probe (is the device usable here, and why not),
//! a factory, and a line of capabilities. Opening a device gives the one shared instance
//! of the process: every session of every model on that device uses it.

use super::{CpuDevice, Device, HOST};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Whether the device can be opened on this machine.
    pub available: bool,
    /// Short facts (threads, parameter sets) or the reasons it is unavailable.
    pub details: Vec<String>,
}

impl DeviceStatus {
    /// A usable device with details.
    pub fn available(details: Vec<String>) -> Self {
        DeviceStatus {
            available: true,
            details,
        }
    }

    /// An unusable device with the reasons.
    pub fn unavailable(reasons: Vec<String>) -> Self {
        DeviceStatus {
            available: false,
            details: reasons,
        }
    }
}

type Probe = Arc<dyn Fn() -> DeviceStatus + Send + Sync>;
type Factory = Arc<dyn Fn(&str) -> Result<Arc<dyn Device>, String> + Send + Sync>;

/// One registered device.
#[derive(Clone)]
pub struct DeviceEntry {
    /// Name on the command line.
    pub name: String,
    /// One line on what it is (shown by `amanuensis devices`).
    pub summary: String,
    /// Whether `--device auto` may pick it when available (real accelerators only:
    /// simulators and dry runs are never picked for the user).
    pub auto: bool,
    probe: Probe,
    factory: Factory,
}

impl std::fmt::Debug for DeviceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceEntry")
            .field("name", &self.name)
            .field("summary", &self.summary)
            .field("auto", &self.auto)
            .finish()
    }
}

impl DeviceEntry {
    /// A device entry. `factory` gets the configuration string given with the name
    /// (`npu-sim:strix` gives `strix`; empty when none).
    pub fn new(
        name: impl Into<String>,
        summary: impl Into<String>,
        probe: impl Fn() -> DeviceStatus + Send + Sync + 'static,
        factory: impl Fn(&str) -> Result<Arc<dyn Device>, String> + Send + Sync + 'static,
    ) -> Self {
        DeviceEntry {
            name: name.into(),
            summary: summary.into(),
            auto: false,
            probe: Arc::new(probe),
            factory: Arc::new(factory),
        }
    }

    /// Marks the device as one `--device auto` may choose.
    pub fn auto_pick(mut self) -> Self {
        self.auto = true;
        self
    }

    /// Runs the probe.
    pub fn probe(&self) -> DeviceStatus {
        (self.probe)()
    }
}

/// A device opened through the registry, with the configuration it was opened with.
#[derive(Clone)]
pub struct OpenDevice {
    /// The registry name.
    pub name: String,
    /// The configuration string.
    pub config: String,
    /// The shared instance.
    pub device: Arc<dyn Device>,
}

/// Registered devices and the instances opened so far (one per name and configuration).
#[derive(Default)]
pub struct DeviceRegistry {
    entries: Vec<DeviceEntry>,
    open: Mutex<HashMap<(String, String), Arc<dyn Device>>>,
}

impl std::fmt::Debug for DeviceRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.name))
            .finish()
    }
}

impl DeviceRegistry {
    /// A registry holding only the host CPU.
    pub fn with_host() -> Self {
        let mut r = DeviceRegistry::default();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        r.register(DeviceEntry::new(
            HOST,
            "the host CPU: runs every operator",
            move || DeviceStatus::available(vec![format!("{threads} threads")]),
            |_| Ok(Arc::new(CpuDevice) as Arc<dyn Device>),
        ))
        .expect("an empty registry takes the host");
        r
    }

    /// Adds a device; a name can be registered once.
    pub fn register(&mut self, entry: DeviceEntry) -> Result<(), String> {
        if self.entries.iter().any(|e| e.name == entry.name) {
            return Err(format!("device '{}' is registered twice", entry.name));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// The registered devices, in registration order.
    pub fn entries(&self) -> &[DeviceEntry] {
        &self.entries
    }

    /// The entry of a name.
    pub fn get(&self, name: &str) -> Option<&DeviceEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Registered names, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// The shared instance of `spec` (`name` or `name:config`), opened on first use.
    pub fn open(&self, spec: &str) -> Result<OpenDevice, String> {
        let (name, config) = spec.split_once(':').unwrap_or((spec, ""));
        let entry = self.get(name).ok_or_else(|| {
            format!(
                "unknown device '{name}' (registered: {})",
                self.names().join(", ")
            )
        })?;
        let key = (name.to_string(), config.to_string());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = open.get(&key) {
            return Ok(OpenDevice {
                name: key.0,
                config: key.1,
                device: d.clone(),
            });
        }
        // The caller names the device (`Error::Device`); the reason is the factory's own.
        let d = (entry.factory)(config)?;
        open.insert(key.clone(), d.clone());
        Ok(OpenDevice {
            name: key.0,
            config: key.1,
            device: d,
        })
    }

    /// `auto`: the first available device marked [`DeviceEntry::auto_pick`], else the
    /// host; with the statuses of the devices passed over.
    pub fn pick_auto(&self) -> (String, Vec<(String, DeviceStatus)>) {
        let mut passed = Vec::new();
        for e in self.entries.iter().filter(|e| e.auto) {
            let st = e.probe();
            if st.available {
                return (e.name.clone(), passed);
            }
            passed.push((e.name.clone(), st));
        }
        (HOST.to_string(), passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_instance_per_name_and_configuration() {
        let r = DeviceRegistry::with_host();
        let a = r.open("cpu").unwrap();
        let b = r.open("cpu").unwrap();
        assert!(Arc::ptr_eq(&a.device, &b.device));
        let c = r.open("cpu:other").unwrap();
        assert!(!Arc::ptr_eq(&a.device, &c.device));
    }

    #[test]
    fn unknown_devices_and_duplicates_are_named() {
        let mut r = DeviceRegistry::with_host();
        let e = r.open("gpu").err().unwrap();
        assert!(
            e.contains("unknown device 'gpu'") && e.contains("cpu"),
            "{e}"
        );
        let dup = DeviceEntry::new(
            "cpu",
            "",
            || DeviceStatus::available(vec![]),
            |_| Ok(Arc::new(CpuDevice) as Arc<dyn Device>),
        );
        assert!(r.register(dup).unwrap_err().contains("registered twice"));
    }

    #[test]
    fn auto_picks_the_first_available_accelerator_else_the_host() {
        let mut r = DeviceRegistry::with_host();
        r.register(
            DeviceEntry::new(
                "accel",
                "",
                || DeviceStatus::unavailable(vec!["absent".into()]),
                |_| Err("absent".into()),
            )
            .auto_pick(),
        )
        .unwrap();
        let (pick, passed) = r.pick_auto();
        assert_eq!(pick, "cpu");
        assert_eq!(passed[0].0, "accel");
        assert_eq!(passed[0].1.details, vec!["absent".to_string()]);
    }
}
