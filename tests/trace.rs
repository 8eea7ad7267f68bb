//! `--trace`: a jfk run on npu-sim writes one Chrome trace with host spans and the
//! simulated device lanes; the test checks lanes, nesting and DMA/compute overlap.

use crate::common;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const DEVICE_PID: u64 = amanuensis_runtime::trace::DEVICE_PID;

fn num(e: &Value, k: &str) -> f64 {
    e[k].as_f64()
        .unwrap_or_else(|| panic!("event without {k}: {e}"))
}

#[test]
fn jfk_trace_has_device_lanes_nested_spans_and_overlapped_dma() {
    let dir = std::env::temp_dir().join(format!("amanuensis-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // In a folder that does not exist yet: `--trace` makes it.
    let path = dir.join("traces/jfk.json");
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/jfk.wav");
    let out = common::cli()
        .args(["transcribe", "-q", "--device", "npu-sim", "--trace"])
        .arg(&path)
        .arg(&sample)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ask not what your country can do for you")
    );
    let events: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("the trace is a JSON array");

    // Lanes: one per column and per shim DMA channel, labelled as simulated.
    let lanes: BTreeMap<u64, String> = events
        .iter()
        .filter(|e| {
            e["ph"] == "M" && e["name"] == "thread_name" && e["pid"].as_u64() == Some(DEVICE_PID)
        })
        .map(|e| {
            (
                e["tid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for c in 0..4 {
        for want in [
            format!("column {c} compute"),
            format!("column {c} shim DMA in 0"),
            format!("column {c} shim DMA in 1"),
            format!("column {c} shim DMA out 0"),
            format!("column {c} shim DMA out 1"),
        ] {
            assert!(
                lanes
                    .values()
                    .any(|n| n.starts_with(&want) && n.ends_with("(simulated)")),
                "lane {want} missing: {lanes:?}"
            );
        }
    }
    let procs: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert!(procs.iter().any(|p| p.contains("simulated")), "{procs:?}");

    // Host spans nest: on each thread, begin/end events form a well-bracketed sequence.
    let mut stacks: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    let mut host_spans = 0;
    for e in events
        .iter()
        .filter(|e| e["pid"].as_u64() != Some(DEVICE_PID))
    {
        let key = (
            e["pid"].as_u64().unwrap_or(0),
            e["tid"].as_u64().unwrap_or(0),
        );
        match e["ph"].as_str() {
            Some("B") => {
                stacks
                    .entry(key)
                    .or_default()
                    .push(e["name"].as_str().unwrap_or("").to_string());
                host_spans += 1;
            }
            Some("E") => {
                let top = stacks.entry(key).or_default().pop();
                assert!(top.is_some(), "end without begin on thread {key:?}: {e}");
            }
            _ => {}
        }
    }
    assert!(
        stacks.values().all(|s| s.is_empty()),
        "unclosed spans: {stacks:?}"
    );
    assert!(host_spans > 10, "host spans: {host_spans}");

    // Device spans nest per lane (in one queue, a span is inside or after the previous one).
    let mut by_lane: BTreeMap<u64, Vec<(f64, f64, &Value)>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e["ph"] == "X" && e["pid"].as_u64() == Some(DEVICE_PID))
    {
        assert_eq!(e["args"]["simulated"], true);
        by_lane
            .entry(e["tid"].as_u64().unwrap())
            .or_default()
            .push((num(e, "ts"), num(e, "ts") + num(e, "dur"), e));
    }
    for (tid, v) in &mut by_lane {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in v.windows(2) {
            let ((_, e0, _), (s1, e1, _)) = (w[0], w[1]);
            assert!(
                s1 >= e0 - 1e-6 || e1 <= e0 + 1e-6,
                "lane {tid}: spans cross"
            );
        }
    }

    // On the full schedule, each column's DMA-in of tile i+1 overlaps its compute of tile i.
    let tid_of = |name: &str| *lanes.iter().find(|(_, n)| n.starts_with(name)).unwrap().0;
    for c in 0..4 {
        let comp = &by_lane[&tid_of(&format!("column {c} compute"))];
        let dma = &by_lane[&tid_of(&format!("column {c} shim DMA in 0"))];
        let key = |e: &Value| {
            (
                e["args"]["graph"].clone(),
                e["args"]["dispatch"].as_u64(),
                e["args"]["tile"].as_u64(),
            )
        };
        let starts: BTreeSet<String> = dma.iter().map(|d| format!("{:?}", key(d.2))).collect();
        assert!(!starts.is_empty());
        let overlapped = comp
            .windows(2)
            .filter(|w| {
                let (cur, next) = (&w[0], &w[1]);
                let nk = key(next.2);
                nk.1 == key(cur.2).1
                    && dma
                        .iter()
                        .any(|d| key(d.2) == nk && d.0 < cur.1 && d.1 > cur.0)
            })
            .count();
        assert!(
            overlapped > comp.len() / 2,
            "column {c}: DMA-in of tile i+1 overlapped compute of tile i {overlapped} times of {}",
            comp.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
