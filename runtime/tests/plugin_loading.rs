//! `load_plugin` refuses, with a message saying why, every library that is not a plugin
//! of this exact build. The doubles are tiny C libraries (a C compiler is present wherever
//! Rust links on Linux) exporting descriptors that differ from this build in one field.
#![cfg(target_os = "linux")]

use amanuensis_runtime::plugin::{
    load_plugin, LAYOUT_FINGERPRINT, PLUGIN_ABI_VERSION, RUNTIME_VERSION, RUSTC_VERSION, TARGET,
};
use amanuensis_runtime::{PluginError, Registry};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One descriptor's fields; `Default` is this build's.
struct Fields {
    magic: &'static str,
    abi: u32,
    runtime: String,
    rustc: String,
    target: String,
    fingerprint: u64,
    export_register: bool,
    export_type_ids: bool,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            magic: "AMNSPLG",
            abi: PLUGIN_ABI_VERSION,
            runtime: RUNTIME_VERSION.into(),
            rustc: RUSTC_VERSION.into(),
            target: TARGET.into(),
            fingerprint: LAYOUT_FINGERPRINT,
            export_register: true,
            export_type_ids: true,
        }
    }
}

/// Builds a C shared library exporting a descriptor with `f`'s fields.
fn double(name: &str, f: Fields) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-doubles");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("{name}.c"));
    let lib = dir.join(format!("lib{name}.so"));
    // The C twin of `PluginDescriptor` (repr(C)); the register entry traps, so a double
    // that wrongly passed the handshake would crash the test rather than pass it.
    let mut entries = String::new();
    if f.export_register {
        entries.push_str("void amanuensis_plugin_register(void) { __builtin_trap(); }\n");
    }
    if f.export_type_ids {
        entries.push_str("void amanuensis_plugin_type_ids(void) { __builtin_trap(); }\n");
    }
    let c = format!(
        r#"#include <stddef.h>
#include <stdint.h>
typedef struct {{ const char *ptr; size_t len; }} RawStr;
typedef struct {{
    char magic[8]; uint32_t abi_version; uint32_t size;
    RawStr runtime_version, rustc_version, target;
    uint64_t layout_fingerprint;
    RawStr plugin_name, plugin_version;
}} Descriptor;
#define S(x) {{ x, sizeof(x) - 1 }}
static const Descriptor d = {{
    {magic:?}, {abi}u, sizeof(Descriptor), S({runtime:?}), S({rustc:?}), S({target:?}),
    {fingerprint}ull, S("double-plugin"), S("9.9.9")
}};
const Descriptor *amanuensis_plugin_descriptor(void) {{ return &d; }}
{entries}
"#,
        magic = f.magic,
        abi = f.abi,
        runtime = f.runtime,
        rustc = f.rustc,
        target = f.target,
        fingerprint = f.fingerprint,
    );
    std::fs::write(&src, c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| {
            panic!("these tests build C test doubles and need a C compiler ({cc}): {e}")
        });
    assert!(
        out.status.success(),
        "{cc} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

/// Loads `path` into an empty registry, expects a refusal and checks nothing was registered.
fn refuse(path: &Path) -> (PluginError, String) {
    let mut reg = Registry::new();
    let err = load_plugin(path, &mut reg).expect_err("must be refused");
    assert_eq!(reg.names().count(), 0);
    assert!(reg.plugins().is_empty());
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("plugin {}", path.display())),
        "{msg}"
    );
    (err, msg)
}

const ADVICE: &str =
    "Rust has no stable ABI, so a plugin must be built by the same rustc against the same \
                      amanuensis-runtime version as the program that loads it";

#[test]
fn plugin_built_by_another_compiler_is_refused() {
    let lib = double(
        "other_rustc",
        Fields {
            rustc: "rustc 1.70.0 (90c541806 2023-05-31)".into(),
            ..Default::default()
        },
    );
    let (err, msg) = refuse(&lib);
    assert!(
        matches!(err, PluginError::Mismatch { ref plugin, ref mismatches, .. }
        if plugin == "double-plugin 9.9.9" && mismatches.len() == 1),
        "{err:?}"
    );
    assert!(
        msg.contains(&format!(
            "(double-plugin 9.9.9): refused, it was built for a different runtime build: compiler \
         'rustc 1.70.0 (90c541806 2023-05-31)', this program was built by '{RUSTC_VERSION}'"
        )),
        "{msg}"
    );
    assert!(msg.contains(ADVICE), "{msg}");
}

#[test]
fn plugin_built_against_another_runtime_version_is_refused() {
    let lib = double(
        "other_runtime",
        Fields {
            runtime: "0.0.9".into(),
            fingerprint: 7,
            ..Default::default()
        },
    );
    let (err, msg) = refuse(&lib);
    let PluginError::Mismatch { mismatches, .. } = err else {
        panic!("{msg}")
    };
    assert_eq!(
        mismatches[0],
        format!("amanuensis-runtime 0.0.9, this program has {RUNTIME_VERSION}")
    );
    assert!(
        mismatches[1].starts_with(&format!(
            "type layout fingerprint 0000000000000007, this program's is {LAYOUT_FINGERPRINT:016x}"
        )),
        "{}",
        mismatches[1]
    );
    assert_eq!(mismatches.len(), 2);
}

#[test]
fn plugin_of_another_abi_version_is_refused_before_its_strings_are_read() {
    let lib = double(
        "other_abi",
        Fields {
            abi: PLUGIN_ABI_VERSION + 1,
            ..Default::default()
        },
    );
    let (err, msg) = refuse(&lib);
    assert!(matches!(err, PluginError::Mismatch { .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "plugin ABI version {}, this program speaks version {PLUGIN_ABI_VERSION}",
            PLUGIN_ABI_VERSION + 1
        )),
        "{msg}"
    );
}

#[test]
fn descriptor_symbol_without_the_magic_is_not_a_plugin() {
    let lib = double(
        "no_magic",
        Fields {
            magic: "XXXXXXX",
            ..Default::default()
        },
    );
    let (err, msg) = refuse(&lib);
    assert!(matches!(err, PluginError::NotAPlugin { .. }), "{msg}");
    assert!(msg.contains("not an amanuensis plugin: `amanuensis_plugin_descriptor` returned a descriptor without the plugin magic"), "{msg}");
}

#[test]
fn matching_descriptor_without_a_register_entry_is_refused() {
    // Every field matches this build: the handshake passes and the missing entry is found.
    let lib = double(
        "no_register",
        Fields {
            export_register: false,
            ..Default::default()
        },
    );
    let (err, msg) = refuse(&lib);
    assert!(matches!(err, PluginError::NotAPlugin { .. }), "{msg}");
    assert!(msg.ends_with("not an amanuensis plugin: it has a descriptor but does not export `amanuensis_plugin_register`"), "{msg}");
}

#[test]
fn matching_descriptor_without_a_type_ids_entry_is_refused() {
    // A plugin of ABI version 3 exports its TypeId digest too.
    let lib = double(
        "no_type_ids",
        Fields {
            export_type_ids: false,
            ..Default::default()
        },
    );
    let (err, msg) = refuse(&lib);
    assert!(matches!(err, PluginError::NotAPlugin { .. }), "{msg}");
    assert!(msg.ends_with("not an amanuensis plugin: it has a descriptor but does not export `amanuensis_plugin_type_ids`"), "{msg}");
}

#[test]
fn shared_library_that_is_not_a_plugin_is_refused() {
    let (err, msg) = refuse(Path::new("libc.so.6"));
    assert!(matches!(err, PluginError::NotAPlugin { .. }), "{msg}");
    assert_eq!(
        msg,
        "plugin libc.so.6: not an amanuensis plugin: it does not export `amanuensis_plugin_descriptor` \
         (a plugin crate is built with crate-type \"cdylib\" and calls `amanuensis_runtime::export_plugin!`)"
    );
}

#[test]
fn files_that_are_not_libraries_are_refused() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let missing = dir.join("no-such-plugin.so");
    let (err, msg) = refuse(&missing);
    assert!(matches!(err, PluginError::Open { .. }), "{msg}");
    assert!(msg.contains("cannot open it as a shared library"), "{msg}");

    let text = dir.join("not-a-library.so");
    std::fs::write(&text, "this is a text file\n").unwrap();
    let (err, msg) = refuse(&text);
    assert!(matches!(err, PluginError::Open { .. }), "{msg}");
    assert!(msg.contains("cannot open it as a shared library"), "{msg}");
}
