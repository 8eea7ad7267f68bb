//! Which devices this machine and this build can use, and why not (`amanuensis devices`).
//!
//! [`probe_npu`] gathers facts (build, libraries, device nodes, manifest, a device open
//! when everything else is in place); [`npu_status`] turns them into a verdict with every
//! reason that applies, so a user sees all problems at once.

use crate::error::XrtError;
use crate::manifest::{self, ManifestError};
use crate::shim::ShimApi;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One device's availability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    /// `cpu`, `npu-sim` or `npu`.
    pub name: String,
    /// Whether `--device <name>` can be used.
    pub available: bool,
    /// What it is when available; every reason it is not, otherwise.
    pub reasons: Vec<String>,
}

impl DeviceStatus {
    /// The details joined for one line.
    pub fn detail(&self) -> String {
        self.reasons.join("; ")
    }
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.available {
            "available"
        } else {
            "unavailable"
        };
        write!(f, "{}: {status} ({})", self.name, self.detail())
    }
}

/// A table of statuses for the terminal: device, status, details.
pub struct StatusTable<'a>(pub &'a [DeviceStatus]);

impl fmt::Display for StatusTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .0
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0)
            .max("device".len());
        writeln!(f, "{:<w$}  {:<11}  details", "device", "status")?;
        for s in self.0 {
            let status = if s.available {
                "available"
            } else {
                "unavailable"
            };
            let mut reasons = s.reasons.iter();
            writeln!(
                f,
                "{:<w$}  {status:<11}  {}",
                s.name,
                reasons.next().map(String::as_str).unwrap_or("")
            )?;
            for r in reasons {
                writeln!(f, "{:<w$}  {:<11}  {r}", "", "")?;
            }
        }
        Ok(())
    }
}

/// A `/dev/accel/accelN` node and what sysfs says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelNode {
    /// The device node.
    pub path: PathBuf,
    /// The kernel driver bound to it (`amdxdna` for the NPU), if readable.
    pub driver: Option<String>,
    /// PCI vendor:device (e.g. `1022:1502` Phoenix, `1022:17f0` Strix), if readable.
    pub pci_id: Option<String>,
}

/// Facts about the NPU path on this machine and build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpuProbe {
    /// Whether the XRT shim is compiled in.
    pub built_with_xrt: bool,
    /// Why the build has no XRT (where it looked), when it has none.
    pub build_missing: String,
    /// The XRT version the shim was compiled against.
    pub xrt_version: Option<String>,
    /// Whether hw_context/register_xclbin are compiled in (XRT >= 2.14).
    pub hwctx: bool,
    /// Where libxrt_coreutil was found, if anywhere.
    pub coreutil: Option<String>,
    /// Where the amdxdna XRT plug-in (libxrt_driver_xdna) was found, if anywhere.
    pub plugin: Option<String>,
    /// Device nodes under /dev/accel.
    pub accel: Vec<AccelNode>,
    /// The manifest: its path and entry count, or why it is unusable.
    pub manifest: Result<(PathBuf, usize), String>,
    /// Result of opening the device (its name or the error); `None` when not attempted.
    pub open: Option<Result<String, String>>,
}

/// Library directories XRT may live in, in search order.
fn lib_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    let built = env!("AMANUENSIS_XRT_LIBDIR");
    if !built.is_empty() {
        v.push(PathBuf::from(built));
    }
    if let Some(x) = std::env::var_os("XILINX_XRT").filter(|x| !x.is_empty()) {
        v.push(PathBuf::from(x).join("lib"));
    }
    v.push("/opt/xilinx/xrt/lib".into());
    v.push(format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH).into());
    v.push("/usr/lib64".into());
    v.push("/usr/lib".into());
    v.dedup();
    v
}

fn find_in(dirs: &[PathBuf], names: &[&str]) -> Option<PathBuf> {
    dirs.iter()
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// Whether the dynamic loader can load libxrt_coreutil, and from where.
fn probe_coreutil() -> Option<String> {
    let dirs = lib_dirs();
    let file = find_in(&dirs, &["libxrt_coreutil.so.2", "libxrt_coreutil.so"]);
    // SAFETY: loading XRT's utility library runs only its own initialisers; it is the
    // library the shim links anyway, and nothing is called through the handle.
    let by_loader = unsafe { libloading::Library::new("libxrt_coreutil.so.2") }.is_ok();
    match (by_loader, file) {
        (true, Some(f)) => Some(f.display().to_string()),
        (true, None) => Some("libxrt_coreutil.so.2 (dynamic loader path)".into()),
        (false, Some(f)) => {
            // SAFETY: as above.
            unsafe { libloading::Library::new(&f) }
                .ok()
                .map(|_| f.display().to_string())
        }
        (false, None) => None,
    }
}

/// Device nodes under /dev/accel (the amdxdna driver creates one per NPU).
pub fn accel_nodes() -> Vec<AccelNode> {
    let Ok(rd) = std::fs::read_dir("/dev/accel") else {
        return Vec::new();
    };
    let mut out: Vec<AccelNode> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("accel"))
        .map(|e| {
            let name = e.file_name();
            let sys = Path::new("/sys/class/accel").join(&name).join("device");
            let driver = std::fs::read_link(sys.join("driver"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            let read = |f: &str| {
                std::fs::read_to_string(sys.join(f))
                    .ok()
                    .map(|s| s.trim().trim_start_matches("0x").to_string())
            };
            let pci_id = match (read("vendor"), read("device")) {
                (Some(v), Some(d)) => Some(format!("{v}:{d}")),
                _ => None,
            };
            AccelNode {
                path: e.path(),
                driver,
                pci_id,
            }
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn probe_manifest() -> Result<(PathBuf, usize), String> {
    let m = manifest::load_from_env().map_err(|e| match e {
        ManifestError::NotConfigured => {
            format!(
                "no kernel manifest (set {} to the directory of manifest.json)",
                manifest::KERNELS_ENV
            )
        }
        e => e.to_string(),
    })?;
    let missing = m.missing_files();
    if let Some((e, p)) = missing.first() {
        let more = if missing.len() > 1 {
            format!(" (and {} more)", missing.len() - 1)
        } else {
            String::new()
        };
        return Err(format!(
            "xclbin for kernel {} not found: {}{more}",
            e.label(),
            p.display()
        ));
    }
    Ok((m.path().to_path_buf(), m.entries().len()))
}

/// Gathers the facts about the NPU; opens the device only when nothing else is missing.
pub fn probe_npu() -> NpuProbe {
    let built_with_xrt = cfg!(xrt_shim);
    let version = env!("AMANUENSIS_XRT_VERSION");
    let mut p = NpuProbe {
        built_with_xrt,
        build_missing: env!("AMANUENSIS_XRT_MISSING").to_string(),
        xrt_version: (!version.is_empty()).then(|| version.to_string()),
        hwctx: cfg!(xrt_hwctx),
        coreutil: probe_coreutil(),
        plugin: find_in(
            &lib_dirs(),
            &["libxrt_driver_xdna.so.2", "libxrt_driver_xdna.so"],
        )
        .map(|f| f.display().to_string()),
        accel: accel_nodes(),
        manifest: probe_manifest(),
        open: None,
    };
    let ready = p.built_with_xrt && p.hwctx && p.coreutil.is_some() && !p.accel.is_empty();
    if ready {
        p.open = Some(open_name());
    }
    p
}

/// Opens device 0 through the real shim and returns its name.
fn open_name() -> Result<String, String> {
    let shim = real_shim().map_err(|e| e.to_string())?;
    let dev = crate::wrap::Device::open(shim, 0).map_err(|e| e.to_string())?;
    dev.name().map_err(|e| e.to_string())
}

/// The verdict for the `npu` device from the facts.
pub fn npu_status(p: &NpuProbe) -> DeviceStatus {
    let mut reasons = Vec::new();
    let version = p.xrt_version.clone().unwrap_or_else(|| "unknown".into());
    if !p.built_with_xrt {
        reasons.push(if p.build_missing.is_empty() {
            "built without XRT".to_string()
        } else {
            format!("built without XRT ({})", p.build_missing)
        });
    } else if !p.hwctx {
        reasons.push(format!(
            "XRT {version} lacks hw_context (the NPU needs XRT >= 2.14, >= 2.17 in practice)"
        ));
    }
    if p.coreutil.is_none() {
        reasons.push("libxrt_coreutil not found".into());
    }
    if p.plugin.is_none() {
        reasons.push("the amdxdna XRT plug-in (libxrt_driver_xdna.so.2) not found".into());
    }
    if p.accel.is_empty() {
        reasons.push(
            "no /dev/accel device (no Ryzen AI NPU, or the amdxdna driver is not loaded)".into(),
        );
    } else if !p
        .accel
        .iter()
        .any(|a| a.driver.as_deref() == Some("amdxdna"))
    {
        let drivers: Vec<String> = p
            .accel
            .iter()
            .map(|a| {
                format!(
                    "{} ({})",
                    a.path.display(),
                    a.driver.as_deref().unwrap_or("unknown driver")
                )
            })
            .collect();
        reasons.push(format!(
            "no /dev/accel device is driven by amdxdna: {}",
            drivers.join(", ")
        ));
    }
    if let Err(m) = &p.manifest {
        reasons.push(m.clone());
    }
    if let Some(Err(e)) = &p.open {
        reasons.push(format!("opening the device failed: {e}"));
    }
    if !reasons.is_empty() {
        return DeviceStatus {
            name: "npu".into(),
            available: false,
            reasons,
        };
    }
    let node = &p.accel[0];
    let name = match &p.open {
        Some(Ok(n)) => n.clone(),
        _ => "NPU".into(),
    };
    let mut detail = format!("{name} via XRT {version}, {}", node.path.display());
    if let Some(id) = &node.pci_id {
        detail.push_str(&format!(" (PCI {id})"));
    }
    if let Ok((path, n)) = &p.manifest {
        detail.push_str(&format!(", {n} kernel variants in {}", path.display()));
    }
    DeviceStatus {
        name: "npu".into(),
        available: true,
        reasons: vec![detail],
    }
}

/// The status of every device: `cpu`, `npu-sim`, `npu`.
pub fn detect() -> Vec<DeviceStatus> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    vec![
        DeviceStatus {
            name: "cpu".into(),
            available: true,
            reasons: vec![format!("{threads} threads")],
        },
        DeviceStatus {
            name: "npu-sim".into(),
            available: true,
            reasons: vec![
                "timing model of the Ryzen AI NPU (phoenix, strix); its times are projections"
                    .into(),
            ],
        },
        npu_status(&probe_npu()),
    ]
}

/// The device `--device auto` means: `npu` when it is available, else `cpu`.
pub fn auto_device(statuses: &[DeviceStatus]) -> &'static str {
    if statuses.iter().any(|s| s.name == "npu" && s.available) {
        "npu"
    } else {
        "cpu"
    }
}

/// The real shim of this build, or why there is none.
pub fn real_shim() -> Result<Arc<dyn ShimApi>, XrtError> {
    #[cfg(xrt_shim)]
    {
        let shim = crate::ffi::XrtShim::new().map_err(|e| XrtError::NotBuilt(e.to_string()))?;
        Ok(Arc::new(shim))
    }
    #[cfg(not(xrt_shim))]
    {
        let why = env!("AMANUENSIS_XRT_MISSING");
        Err(XrtError::NotBuilt(if why.is_empty() {
            "built without XRT".to_string()
        } else {
            format!("built without XRT: {why}")
        }))
    }
}
