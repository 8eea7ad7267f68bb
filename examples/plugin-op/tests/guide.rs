//! `docs/plugins.md` quotes the example's sources; these checks keep the quotes true.
//! (`examples/plugin-op/check-guide.sh` runs the guide's commands in a fresh clone.)

mod common;

use amanuensis_runtime::npu::{NpuParams, NpuSim};
use amanuensis_runtime::schedule::{plan, SchedulerOptions};
use amanuensis_runtime::Graph;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Fenced blocks of a markdown text: (info string, lines).
fn blocks(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, Vec<String>)> = None;
    for line in text.lines() {
        if let Some(info) = line.strip_prefix("```") {
            match cur.take() {
                Some(b) => out.push(b),
                None => cur = Some((info.trim().to_string(), Vec::new())),
            }
        } else if let Some((_, lines)) = cur.as_mut() {
            lines.push(line.to_string());
        }
    }
    assert!(cur.is_none(), "unterminated code block");
    out
}

fn guide() -> String {
    std::fs::read_to_string(workspace_root().join("docs/plugins.md")).expect("docs/plugins.md")
}

#[test]
fn code_excerpts_are_verbatim_from_the_example() {
    let mut checked = 0;
    for (info, lines) in blocks(&guide()) {
        let marker = match info.as_str() {
            "rust" => "// ",
            "toml" => "# ",
            _ => continue,
        };
        let Some(path) = lines
            .first()
            .and_then(|l| l.strip_prefix(marker))
            .filter(|p| p.starts_with("examples/"))
        else {
            continue;
        };
        let source = std::fs::read_to_string(workspace_root().join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let excerpt = lines[1..].join("\n");
        assert!(
            source.contains(&excerpt),
            "the excerpt of {path} in docs/plugins.md is not in the file:\n{excerpt}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} excerpts found");
}

#[test]
fn graph_excerpts_are_verbatim_from_the_example_graph() {
    let graph =
        std::fs::read_to_string(workspace_root().join("examples/plugin-op/graphs/swish-mlp.graph"))
            .unwrap();
    let json: Vec<_> = blocks(&guide())
        .into_iter()
        .filter(|(i, _)| i == "json")
        .collect();
    assert!(!json.is_empty());
    for (_, lines) in json {
        let excerpt = lines.join("\n");
        assert!(
            graph.contains(&excerpt),
            "not in swish-mlp.graph:\n{excerpt}"
        );
    }
}

#[test]
fn every_command_names_a_package_or_file_of_this_repository() {
    let root = workspace_root();
    let mut commands = 0;
    for (info, lines) in blocks(&guide()) {
        if info != "sh" {
            continue;
        }
        for line in lines
            .iter()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            commands += 1;
            for word in line.split_whitespace() {
                if let Some(pkg) = word
                    .strip_prefix("amanuensis-")
                    .filter(|_| line.contains("-p "))
                {
                    let dir = if pkg == "plugin-example" {
                        "examples/plugin-op".to_string()
                    } else {
                        pkg.to_string()
                    };
                    assert!(
                        root.join(dir).join("Cargo.toml").is_file(),
                        "{line}: no package {word}"
                    );
                }
                if word.starts_with("examples/") || word.starts_with("graphs/") {
                    assert!(root.join(word).exists(), "{line}: no file {word}");
                }
            }
        }
    }
    assert!(commands >= 2, "{commands} commands");
}

/// The guide's `text` block that starts with `prefix`.
fn text_block(prefix: &str) -> String {
    blocks(&guide())
        .into_iter()
        .filter(|(info, _)| info == "text")
        .map(|(_, lines)| lines.join("\n"))
        .find(|b| b.starts_with(prefix))
        .unwrap_or_else(|| panic!("no text block starting with {prefix:?} in docs/plugins.md"))
}

#[test]
fn quoted_messages_are_the_real_ones() {
    let mut file = common::model_file();
    file.graphs[0]
        .nodes
        .iter_mut()
        .find(|n| n.name == "act")
        .unwrap()
        .op = "swsh".into();
    let err = Graph::build(&file.graphs[0], &file.weights, &common::registry()).unwrap_err();
    assert_eq!(
        text_block("graph 'mlp', node 'act': unknown operator"),
        err.to_string()
    );

    #[cfg(target_os = "linux")]
    {
        let mut reg = amanuensis_runtime::Registry::new();
        let err = amanuensis_runtime::load_plugin(Path::new("libc.so.6"), &mut reg).unwrap_err();
        assert_eq!(text_block("plugin libc.so.6:"), err.to_string());
    }
}

/// Numbers as `#` and runs of spaces as one, so that the quoted plan keeps its structure
/// (placements, kernels, fusions, transfers) while the timing model's figures move.
fn shape_of(text: &str) -> String {
    let mut out = String::new();
    let mut last = ' ';
    for c in text.chars() {
        let c = if c.is_ascii_digit() || (c == '.' && last == '#') {
            '#'
        } else {
            c
        };
        if (c == '#' && last == '#') || (c == ' ' && last == ' ') {
            continue;
        }
        out.push(c);
        last = c;
    }
    out
}

#[test]
fn quoted_plan_matches_the_scheduler_up_to_its_figures() {
    let file = common::model_file();
    let registry = common::registry();
    let graph = Graph::build(&file.graphs[0], &file.weights, &registry).unwrap();
    let device = NpuSim::new(NpuParams::phoenix());
    let p = plan(graph, &registry, &device, &SchedulerOptions::default()).unwrap();
    let quoted = text_block("graph 'mlp' on npu-sim:");
    assert_eq!(
        shape_of(&quoted),
        shape_of(p.report().trim_end()),
        "the plan in docs/plugins.md is out of date"
    );
}
