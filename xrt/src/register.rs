//! The XRT devices in the runtime's device registry: `npu`, the Ryzen AI NPU (picked by
//! `--device auto` when usable), and `npu-dry`, the same device code against the shim's
//! test double on any machine. Both take the NPU configuration string of
//! [`amanuensis_runtime::npu::config_string`].

use crate::device::{NpuXrtDevice, NpuXrtOptions};
use amanuensis_runtime::device::{Device, DeviceEntry, DeviceRegistry, DeviceStatus};
use amanuensis_runtime::npu::parse_config;
use std::sync::Arc;

fn options(config: &str, dry: bool) -> Result<NpuXrtOptions, String> {
    let (params, schedule) = parse_config(config)?;
    Ok(NpuXrtOptions {
        params: (!config.is_empty()).then_some(params),
        schedule,
        dry,
        ..NpuXrtOptions::from_env()
    })
}

/// Registers `npu` and `npu-dry`.
pub fn register_devices(registry: &mut DeviceRegistry) -> Result<(), String> {
    registry.register(
        DeviceEntry::new(
            "npu",
            "the Ryzen AI NPU through XRT",
            || {
                let st = crate::detect::npu_status(&crate::detect::probe_npu());
                if st.available {
                    DeviceStatus::available(st.reasons)
                } else {
                    DeviceStatus::unavailable(st.reasons)
                }
            },
            |config| {
                let opts = options(config, false)?;
                let manifest = crate::manifest::load_from_env().map_err(|e| e.to_string())?;
                let shim = crate::detect::real_shim().map_err(|e| e.to_string())?;
                let (shim, calls) = crate::dry::logged(shim)?;
                let d = NpuXrtDevice::with_shim(shim, manifest, opts)
                    .map_err(|e| e.to_string())?
                    .with_call_context(calls);
                Ok(Arc::new(d) as Arc<dyn Device>)
            },
        )
        .auto_pick(),
    )?;
    registry.register(DeviceEntry::new(
        "npu-dry",
        "the npu device's code against XRT's test double: the catalogue's references compute",
        || {
            DeviceStatus::available(vec![
                "the npu device's code against XRT's test double; outputs from the catalogue's references"
                    .into(),
            ])
        },
        |config| {
            let opts = options(config, true)?;
            Ok(Arc::new(crate::dry::dry_device(opts)?) as Arc<dyn Device>)
        },
    ))
}
