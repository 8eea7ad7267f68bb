//! npu-sim against whisper-xdna's measured encoder times (docs/whisper-xdna.md): the
//! calibration the default Phoenix parameters come from. A change to the simulator, the
//! described schedule or the parameters that breaks it fails here. All NPU figures are
//! projections.

use amanuensis::reproduce::{self, LARGE_V3, MEASURED, SMALL, TINY};
use amanuensis_runtime::npu::NpuParams;

#[test]
fn the_default_phoenix_parameters_are_the_fit_on_large_v3_and_turbo() {
    let p = NpuParams::phoenix();
    let f = reproduce::fit_on_large(&p).unwrap();
    let close = |a: f64, b: f64| (a / b - 1.0).abs() < 1e-3;
    assert!(
        close(f.ddr_bytes_per_s, p.ddr_bytes_per_s)
            && close(f.host_call_s, p.host_call_s)
            && close(f.host_element_s, p.host_element_s),
        "the fit gives {:.2} GB/s, {:.3} ms per submission, {:.4} ns per element; the defaults say {:.2}, {:.3}, {:.4}",
        f.ddr_bytes_per_s / 1e9,
        f.host_call_s * 1e3,
        f.host_element_s * 1e9,
        p.ddr_bytes_per_s / 1e9,
        p.host_call_s * 1e3,
        p.host_element_s * 1e9
    );
}

#[test]
fn every_measurement_is_reproduced_within_its_tolerance() {
    // Large-v3 and the turbo context ladder within ±10 % (fitted), small and tiny within
    // ±25 % with the same parameters (held out).
    for (m, pr) in reproduce::project_all(&NpuParams::phoenix()).unwrap() {
        let err = pr.total_ns / 1e6 / m.ms - 1.0;
        assert!(
            err.abs() <= m.tolerance,
            "{} at ctx {}: projected {:.1} ms, measured {} ms ({:+.1} %, allowed ±{:.0} %)",
            m.model.name,
            m.ctx,
            pr.total_ns / 1e6,
            m.ms,
            100.0 * err,
            100.0 * m.tolerance
        );
    }
}

#[test]
fn the_reproduction_figures_are_pinned() {
    // Projected ms per pass with the default parameters, to 0.1 ms: any change to the
    // timing model or the described schedule shows up here (recompute, then re-check the
    // tolerances above and the discussion in docs/scheduler.md).
    let expect = [
        ("large-v3-turbo", 512, 1582.6),
        ("large-v3-turbo", 768, 2293.6),
        ("large-v3-turbo", 1024, 2402.0),
        ("large-v3-turbo", 1500, 3344.6),
        ("large-v3", 1500, 3344.6),
        ("small", 1500, 1346.7),
        ("tiny", 1500, 363.1),
    ];
    let got = reproduce::project_all(&NpuParams::phoenix()).unwrap();
    assert_eq!(got.len(), expect.len());
    let mut off = Vec::new();
    for ((m, pr), (name, ctx, ms)) in got.iter().zip(expect) {
        assert_eq!((m.model.name, m.ctx), (name, ctx));
        let now = pr.total_ns / 1e6;
        if (now - ms).abs() >= 0.05 {
            off.push(format!("{name} ctx {ctx}: {now:.1} ms, pinned {ms}"));
        }
    }
    assert!(off.is_empty(), "{}", off.join("\n"));
}

#[test]
fn the_breakdown_of_large_v3_matches_its_measured_host_work_and_counts() {
    let p = NpuParams::phoenix();
    let pr = reproduce::whisper_xdna_encoder(&LARGE_V3, 1500)
        .price(&p)
        .unwrap();
    // The host share is the measured 0.84 CPU-s by construction of the fit.
    assert!(
        (pr.host_ns / 1e6 - 840.0).abs() < 1.0,
        "{}",
        pr.host_ns / 1e6
    );
    // 228 switches at 1.4 ms, 7 creations: the thrash-free large schedule.
    assert_eq!((pr.switches, pr.creates), (228, 7));
    assert!((pr.switch_ns / 1e6 - 319.2).abs() < 1e-6);
    // Held-out sizes are dominated by context thrash and host work, not GEMMs.
    for m in [TINY, SMALL] {
        let pr = reproduce::whisper_xdna_encoder(&m, 1500).price(&p).unwrap();
        assert!(pr.compute_ns < 0.2 * pr.total_ns, "{}", m.name);
    }
    assert_eq!(MEASURED.iter().filter(|m| m.fitted).count(), 5);
}
