//! Device detection: the verdict from each combination of facts, the table, and the real
//! report on this machine.

use amanuensis_xrt::{
    auto_device, detect, npu_status, AccelNode, DeviceStatus, NpuProbe, StatusTable,
};
use std::path::PathBuf;

fn ready() -> NpuProbe {
    NpuProbe {
        built_with_xrt: true,
        build_missing: String::new(),
        xrt_version: Some("2.18.0".into()),
        hwctx: true,
        coreutil: Some("/opt/xilinx/xrt/lib/libxrt_coreutil.so.2".into()),
        plugin: Some("/opt/xilinx/xrt/lib/libxrt_driver_xdna.so.2".into()),
        accel: vec![AccelNode {
            path: "/dev/accel/accel0".into(),
            driver: Some("amdxdna".into()),
            pci_id: Some("1022:1502".into()),
        }],
        manifest: Ok((PathBuf::from("/k/manifest.json"), 12)),
        open: Some(Ok("NPU Phoenix".into())),
    }
}

#[test]
fn everything_in_place_is_available_with_a_description() {
    let s = npu_status(&ready());
    assert!(s.available);
    assert_eq!(s.detail(), "NPU Phoenix via XRT 2.18.0, /dev/accel/accel0 (PCI 1022:1502), 12 kernel variants in /k/manifest.json");
    assert_eq!(auto_device(&[s]), "npu");
}

#[test]
fn each_missing_piece_gives_its_reason() {
    type Change = Box<dyn Fn(&mut NpuProbe)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|p| {
                p.built_with_xrt = false;
                p.build_missing = String::new();
            }),
            "built without XRT",
        ),
        (
            Box::new(|p| {
                p.hwctx = false;
                p.xrt_version = Some("2.13.0".into());
            }),
            "XRT 2.13.0 lacks hw_context (the NPU needs XRT >= 2.14, >= 2.17 in practice)",
        ),
        (Box::new(|p| p.coreutil = None), "libxrt_coreutil not found"),
        (
            Box::new(|p| p.plugin = None),
            "the amdxdna XRT plug-in (libxrt_driver_xdna.so.2) not found",
        ),
        (
            Box::new(|p| p.accel.clear()),
            "no /dev/accel device (no Ryzen AI NPU, or the amdxdna driver is not loaded)",
        ),
        (
            Box::new(|p| p.accel[0].driver = Some("ivpu".into())),
            "no /dev/accel device is driven by amdxdna: /dev/accel/accel0 (ivpu)",
        ),
        (
            Box::new(|p| {
                p.manifest =
                    Err("xclbin for kernel gelu (variant 4x8) not found: /k/g.xclbin".into())
            }),
            "xclbin for kernel gelu (variant 4x8) not found: /k/g.xclbin",
        ),
        (
            Box::new(|p| p.open = Some(Err("npu_device_open: No devices found".into()))),
            "opening the device failed: npu_device_open: No devices found",
        ),
    ];
    for (change, want) in cases {
        let mut p = ready();
        change(&mut p);
        let s = npu_status(&p);
        assert!(!s.available, "{want}");
        assert_eq!(s.reasons, vec![want.to_string()]);
        assert_eq!(auto_device(&[s]), "cpu");
    }
}

#[test]
fn all_reasons_are_listed_together() {
    let mut p = ready();
    p.hwctx = false;
    p.xrt_version = Some("2.13.0".into());
    p.accel.clear();
    p.plugin = None;
    p.open = None;
    let s = npu_status(&p);
    assert_eq!(s.reasons.len(), 3, "{:?}", s.reasons);
}

#[test]
fn table_lists_one_reason_per_line() {
    let statuses = vec![
        DeviceStatus {
            name: "cpu".into(),
            available: true,
            reasons: vec!["2 threads".into()],
        },
        DeviceStatus {
            name: "npu".into(),
            available: false,
            reasons: vec!["first".into(), "second".into()],
        },
    ];
    let table = StatusTable(&statuses).to_string();
    assert_eq!(
        table,
        "device  status       details\n\
         cpu     available    2 threads\n\
         npu     unavailable  first\n\
         \x20                    second\n"
    );
    assert_eq!(statuses[1].to_string(), "npu: unavailable (first; second)");
}

#[test]
fn report_on_this_machine_is_consistent_with_the_build() {
    let report = detect();
    println!("{}", StatusTable(&report));
    let names: Vec<&str> = report.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["cpu", "npu-sim", "npu"]);
    assert!(report[0].available && report[1].available);
    let npu = &report[2];
    if !amanuensis_xrt::BUILT_WITH_XRT {
        assert!(!npu.available);
        assert!(
            npu.reasons[0].starts_with("built without XRT"),
            "{:?}",
            npu.reasons
        );
    } else if !amanuensis_xrt::BUILT_WITH_HWCTX {
        assert!(!npu.available);
        let want = format!("XRT {} lacks hw_context", amanuensis_xrt::XRT_VERSION);
        assert!(npu.reasons[0].starts_with(&want), "{:?}", npu.reasons);
    }
    if amanuensis_xrt::accel_nodes().is_empty() {
        assert!(!npu.available);
        assert!(
            npu.reasons
                .iter()
                .any(|r| r.starts_with("no /dev/accel device")),
            "{:?}",
            npu.reasons
        );
    }
}
