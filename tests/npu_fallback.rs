//! Device faults on the real NPU device, driven through the test double of the XRT shim:
//! a run that times out, ends in an error state, or a device that disappears mid-run makes
//! the session repeat the graph run on the CPU, so the jfk transcript equals the CPU's.

use crate::common;

use amanuensis::audio::load_audio;
use amanuensis::model::DeviceSpec;
use amanuensis::{TranscribeOptions, WhisperModel};
use amanuensis_xrt::double::{fake_xclbin, Failure, Step};
use amanuensis_xrt::{Manifest, NpuXrtDevice, NpuXrtOptions, RecordingShim, RunState, ShimApi};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The shipped manifest of whisper-base's device graph (one xclbin, one kernel per
/// variant), with a fake xclbin declaring every kernel and fake instruction files written
/// next to a copy of it.
fn manifest_with_fake_binaries() -> (PathBuf, Arc<Manifest>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("xrt/kernels/whisper-base/manifest.json");
    let text = std::fs::read_to_string(&src).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dir = std::env::temp_dir().join(format!("amanuensis-fallback-{}", std::process::id()));
    let mut xclbins: BTreeMap<String, Vec<(String, u32)>> = BTreeMap::new();
    for e in json["kernels"].as_array().unwrap() {
        let nargs = e["args"].as_array().unwrap().len() as u32 + 3;
        let kernel = e["xclbin_kernel"].as_str().unwrap().to_string();
        xclbins
            .entry(e["xclbin"].as_str().unwrap().to_string())
            .or_default()
            .push((kernel, nargs));
        let p = dir.join(e["insts"].as_str().unwrap());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![0u8; 64]).unwrap();
    }
    assert_eq!(xclbins.len(), 1, "one xclbin for the whole model");
    for (name, kernels) in &xclbins {
        let ks: Vec<(&str, u32)> = kernels.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, fake_xclbin(&ks)).unwrap();
    }
    let copy = dir.join("manifest.json");
    std::fs::write(&copy, text).unwrap();
    let m = Arc::new(Manifest::load(&copy).unwrap());
    (dir, m)
}

fn jfk_on(spec: &DeviceSpec) -> (String, usize) {
    let graph = Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/whisper-base.graph");
    let mut m = WhisperModel::load_on(
        &common::model_dir(),
        Some(&graph),
        &amanuensis_operators::standard_registry(),
        spec,
    )
    .unwrap();
    let pcm = load_audio(&common::data_dir().join("audio/jfk.wav")).unwrap();
    let mut opts = TranscribeOptions::default();
    opts.decoding.beam.beam_size = 1;
    let t = m.transcribe_pcm(&pcm, &opts).unwrap();
    let fallbacks = m.window.as_ref().map_or(0, |w| w.stats().fallbacks)
        + m.encoder.stats().fallbacks
        + m.cross_kv.stats().fallbacks;
    (t.text, fallbacks)
}

#[test]
fn device_faults_fall_back_to_the_cpu_with_the_cpu_transcript() {
    let (dir, manifest) = manifest_with_fake_binaries();
    let cpu = {
        let mut m = common::load_model();
        let pcm = load_audio(&common::data_dir().join("audio/jfk.wav")).unwrap();
        let mut opts = TranscribeOptions::default();
        opts.decoding.beam.beam_size = 1;
        m.transcribe_pcm(&pcm, &opts).unwrap().text
    };
    // (what, runlists, step, failure)
    let cases: Vec<(&str, bool, Step, Failure)> = vec![
        (
            "runlist timeout",
            true,
            Step::RunlistWait,
            Failure::State(RunState::Timeout),
        ),
        (
            "run error state in a runlist",
            true,
            Step::RunlistWait,
            Failure::State(RunState::Error),
        ),
        (
            "device lost at submit",
            true,
            Step::RunlistSubmit,
            Failure::DeviceLost,
        ),
        (
            "chained run timeout",
            false,
            Step::RunWait,
            Failure::State(RunState::Timeout),
        ),
        (
            "device lost mid-chain",
            false,
            Step::RunStart,
            Failure::DeviceLost,
        ),
    ];
    for (what, runlists, step, failure) in cases {
        let shim = Arc::new(if runlists {
            RecordingShim::new()
        } else {
            RecordingShim::new().without_runlist()
        });
        shim.fail_always(step, failure);
        let (s, m) = (shim.clone(), manifest.clone());
        let spec = DeviceSpec {
            device: "npu".into(),
            factory: Some(Arc::new(move || {
                let dev = NpuXrtDevice::with_shim(
                    s.clone() as Arc<dyn ShimApi>,
                    m.clone(),
                    NpuXrtOptions::default(),
                )?;
                Ok(Arc::new(dev) as Arc<dyn amanuensis_runtime::device::Device>)
            })),
            ..DeviceSpec::default()
        };
        let (text, fallbacks) = jfk_on(&spec);
        println!(
            "{what}: {fallbacks} graph runs repeated on the CPU; {} shim calls",
            shim.calls().len()
        );
        assert!(fallbacks >= 1, "{what}: the device was never tried");
        assert!(
            shim.runs_started() >= 1 || matches!(step, Step::RunStart | Step::RunlistSubmit),
            "{what}: no run reached the device"
        );
        assert_eq!(text, cpu, "{what}: transcript differs from the CPU's");
    }
    let _ = std::fs::remove_dir_all(dir);
}
