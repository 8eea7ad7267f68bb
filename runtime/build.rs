//! Records the compiler that builds this crate, for the plugin ABI handshake: a plugin
//! built by another rustc is refused because Rust has no stable ABI.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{rustc} -vV` to record the compiler version: {e}"));
    assert!(
        out.status.success(),
        "`{rustc} -vV` failed with {}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // The first line names release, commit and date: "rustc 1.88.0 (6b00bc388 2025-06-23)".
    let version = text.lines().next().unwrap_or("").trim().to_string();
    assert!(
        version.starts_with("rustc "),
        "unexpected `{rustc} -vV` output: {text}"
    );
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=AMANUENSIS_RUSTC_VERSION={version}");
    println!("cargo:rustc-env=AMANUENSIS_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
