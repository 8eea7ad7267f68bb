//! Compiles the XRT shim (shim/npu_shim.cpp) when XRT headers and libxrt_coreutil are
//! found, and tells the Rust code what was found:
//!
//! - `cfg(xrt_shim)`: the shim is compiled and linked (the real `XrtShim` exists);
//! - `cfg(xrt_hwctx)`: it includes hw_context/register_xclbin (XRT >= 2.14), without which
//!   the NPU cannot be driven;
//! - `cfg(xrt_runlist)`: it includes xrt::runlist (XRT >= 2.18), which submits a segment's
//!   runs as one chained command;
//! - `AMANUENSIS_XRT_VERSION`, `AMANUENSIS_XRT_INCLUDE`, `AMANUENSIS_XRT_LIBDIR`: what was
//!   detected (empty when built without XRT), `AMANUENSIS_XRT_MISSING`: why not.
//!
//! Search order: `$XILINX_XRT` (AMD's setup.sh sets it), /opt/xilinx/xrt (AMD's packages),
//! then /usr (Debian's libxrt-dev, whose headers live in /usr/include/xrt/xrt/ and whose
//! xrt.pc is broken, so pkg-config is not used). `AMANUENSIS_NO_XRT=1` builds without XRT.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// One place XRT may be installed.
struct Candidate {
    /// Directory that holds `xrt/xrt_device.h` (the shim includes `<xrt/...>`).
    include: PathBuf,
    /// Directories that may hold libxrt_coreutil.
    libdirs: Vec<PathBuf>,
}

/// What was found.
struct Found {
    include: PathBuf,
    libdir: PathBuf,
    /// The library name to link: `xrt_coreutil`, or the versioned file when only the
    /// runtime package (no unversioned .so link) is installed.
    link: String,
    version: Option<(u32, u32, Option<u32>)>,
    /// Which header declares hw_context, if any.
    hwctx_header: Option<&'static str>,
    register_xclbin: bool,
    /// Which header declares xrt::runlist, if any.
    runlist_header: Option<&'static str>,
}

fn candidates() -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(x) = env::var_os("XILINX_XRT").filter(|v| !v.is_empty()) {
        let x = PathBuf::from(x);
        out.push(Candidate {
            include: x.join("include"),
            libdirs: vec![x.join("lib"), x.join("lib64")],
        });
    }
    out.push(Candidate {
        include: "/opt/xilinx/xrt/include".into(),
        libdirs: vec!["/opt/xilinx/xrt/lib".into(), "/opt/xilinx/xrt/lib64".into()],
    });
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let usr_libs: Vec<PathBuf> = vec![
        format!("/usr/lib/{arch}-linux-gnu").into(),
        "/usr/lib64".into(),
        "/usr/lib".into(),
    ];
    // Debian 2.13 layout (/usr/include/xrt/xrt/xrt_device.h), then a flat one.
    out.push(Candidate {
        include: "/usr/include/xrt".into(),
        libdirs: usr_libs.clone(),
    });
    out.push(Candidate {
        include: "/usr/include".into(),
        libdirs: usr_libs,
    });
    out
}

/// Parses "major.minor[.patch]".
fn parse_dotted(s: &str) -> Option<(u32, u32, Option<u32>)> {
    let mut it = s.trim().split('.');
    let major = it.next()?.trim().parse().ok()?;
    let minor = it.next()?.trim().parse().ok()?;
    let patch = it.next().and_then(|p| p.trim().parse().ok());
    Some((major, minor, patch))
}

/// The XRT version from an installed version header, if one is readable.
fn read_version(include: &Path) -> Option<(u32, u32, Option<u32>)> {
    for rel in [
        "version.h",
        "xrt/detail/version.h",
        "xrt/detail/version-slim.h",
    ] {
        let Ok(text) = fs::read_to_string(include.join(rel)) else {
            continue;
        };
        // `static const char xrt_build_version[] = "2.13.0";`
        if let Some(pos) = text.find("xrt_build_version[]") {
            let rest = &text[pos..];
            if let Some(q1) = rest.find('"') {
                if let Some(len) = rest[q1 + 1..].find('"') {
                    if let Some(v) = parse_dotted(&rest[q1 + 1..q1 + 1 + len]) {
                        return Some(v);
                    }
                }
            }
        }
        // `#define XRT_VERSION_CODE XRT_VERSION(2, 13)`
        if let Some(pos) = text.find("XRT_VERSION_CODE XRT_VERSION(") {
            let rest = &text[pos + "XRT_VERSION_CODE XRT_VERSION(".len()..];
            if let Some(end) = rest.find(')') {
                if let Some(v) = parse_dotted(&rest[..end].replace(',', ".").replace(' ', "")) {
                    return Some(v);
                }
            }
        }
    }
    None
}

fn find_lib(libdirs: &[PathBuf]) -> Option<(PathBuf, String)> {
    for d in libdirs {
        if d.join("libxrt_coreutil.so").exists() {
            return Some((d.clone(), "xrt_coreutil".into()));
        }
    }
    for d in libdirs {
        if d.join("libxrt_coreutil.so.2").exists() {
            return Some((d.clone(), "libxrt_coreutil.so.2".into()));
        }
    }
    None
}

fn probe() -> Result<Found, String> {
    let mut tried = Vec::new();
    for c in candidates() {
        let inc = &c.include;
        let has_headers = ["xrt/xrt_device.h", "xrt/xrt_kernel.h", "xrt/xrt_bo.h"]
            .iter()
            .all(|h| inc.join(h).is_file());
        if !has_headers {
            tried.push(format!("{} (no xrt/xrt_device.h)", inc.display()));
            continue;
        }
        println!(
            "cargo:rerun-if-changed={}",
            inc.join("xrt/xrt_device.h").display()
        );
        let Some((libdir, link)) = find_lib(&c.libdirs) else {
            tried.push(format!(
                "{} (headers but no libxrt_coreutil)",
                inc.display()
            ));
            continue;
        };
        let hwctx_header = if inc.join("xrt/xrt_hw_context.h").is_file() {
            Some("xrt/xrt_hw_context.h")
        } else if inc.join("experimental/xrt_hw_context.h").is_file() {
            Some("experimental/xrt_hw_context.h")
        } else {
            None
        };
        let register_xclbin = fs::read_to_string(inc.join("xrt/xrt_device.h"))
            .map(|t| t.contains("register_xclbin"))
            .unwrap_or(false);
        // XRT 2.18+ declares xrt::runlist in the experimental kernel header (under xrt/ in
        // newer layouts such as Debian's 2.25, at the top level in older AMD packages).
        let runlist_header = ["xrt/experimental/xrt_kernel.h", "experimental/xrt_kernel.h"]
            .into_iter()
            .find(|h| {
                fs::read_to_string(inc.join(h))
                    .map(|t| t.contains("class runlist"))
                    .unwrap_or(false)
            });
        return Ok(Found {
            include: inc.clone(),
            libdir,
            link,
            version: read_version(inc),
            hwctx_header,
            register_xclbin,
            runlist_header,
        });
    }
    Err(format!("no usable XRT: {}", tried.join(", ")))
}

fn version_string(v: Option<(u32, u32, Option<u32>)>) -> String {
    match v {
        Some((a, b, Some(c))) => format!("{a}.{b}.{c}"),
        Some((a, b, None)) => format!("{a}.{b}"),
        None => "unknown".into(),
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=shim/npu_shim.cpp");
    println!("cargo:rerun-if-changed=shim/npu_shim.h");
    println!("cargo:rerun-if-env-changed=XILINX_XRT");
    println!("cargo:rerun-if-env-changed=AMANUENSIS_NO_XRT");
    println!("cargo::rustc-check-cfg=cfg(xrt_shim)");
    println!("cargo::rustc-check-cfg=cfg(xrt_hwctx)");
    println!("cargo::rustc-check-cfg=cfg(xrt_runlist)");

    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let disabled = env::var("AMANUENSIS_NO_XRT")
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false);
    let found = if disabled {
        Err("AMANUENSIS_NO_XRT was set at build time".to_string())
    } else if target_os != "linux" {
        Err(format!(
            "target OS '{target_os}' (XRT for the NPU is Linux-only here)"
        ))
    } else {
        probe()
    };

    let found = match found {
        Ok(f) => f,
        Err(why) => {
            println!("cargo:rustc-env=AMANUENSIS_XRT_VERSION=");
            println!("cargo:rustc-env=AMANUENSIS_XRT_INCLUDE=");
            println!("cargo:rustc-env=AMANUENSIS_XRT_LIBDIR=");
            println!("cargo:rustc-env=AMANUENSIS_XRT_MISSING={why}");
            return;
        }
    };

    let version = version_string(found.version);
    // hw_context needs the header, register_xclbin, and (when the version is known) 2.14+.
    let version_ok = found
        .version
        .map(|(a, b, _)| (a, b) >= (2, 14))
        .unwrap_or(true);
    let hwctx = found.hwctx_header.is_some() && found.register_xclbin && version_ok;
    let runlist = hwctx
        && found.runlist_header.is_some()
        && found
            .version
            .map(|(a, b, _)| (a, b) >= (2, 18))
            .unwrap_or(true);

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .file("shim/npu_shim.cpp")
        .include("shim")
        // -isystem: warnings inside XRT's own headers are not ours to fix.
        .flag("-isystem")
        .flag(found.include.to_str().expect("XRT include path is UTF-8"))
        .define(
            "NPU_SHIM_XRT_VERSION",
            Some(format!("\"{version}\"").as_str()),
        );
    if hwctx {
        build.define("NPU_SHIM_HAVE_HWCTX", None);
        if found.hwctx_header == Some("experimental/xrt_hw_context.h") {
            build.define("NPU_SHIM_HWCTX_IN_EXPERIMENTAL", None);
        }
    }
    if runlist {
        build.define("NPU_SHIM_HAVE_RUNLIST", None);
        if found.runlist_header == Some("experimental/xrt_kernel.h") {
            build.define("NPU_SHIM_RUNLIST_IN_TOP_EXPERIMENTAL", None);
        }
    }
    build.compile("amanuensis_npu_shim");

    println!("cargo:rustc-link-search=native={}", found.libdir.display());
    if found.link == "xrt_coreutil" {
        println!("cargo:rustc-link-lib=dylib=xrt_coreutil");
    } else {
        println!("cargo:rustc-link-lib=dylib:+verbatim={}", found.link);
    }
    // Let this package's own test binaries find a library outside the loader's default
    // path (/opt/xilinx/xrt/lib); dependents read `DEP_AMANUENSIS_NPU_SHIM_LIBDIR`.
    if !found.libdir.starts_with("/usr") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", found.libdir.display());
    }
    println!("cargo:libdir={}", found.libdir.display());
    println!("cargo:rustc-cfg=xrt_shim");
    if hwctx {
        println!("cargo:rustc-cfg=xrt_hwctx");
    }
    if runlist {
        println!("cargo:rustc-cfg=xrt_runlist");
    }
    println!("cargo:rustc-env=AMANUENSIS_XRT_VERSION={version}");
    println!(
        "cargo:rustc-env=AMANUENSIS_XRT_INCLUDE={}",
        found.include.display()
    );
    println!(
        "cargo:rustc-env=AMANUENSIS_XRT_LIBDIR={}",
        found.libdir.display()
    );
    println!("cargo:rustc-env=AMANUENSIS_XRT_MISSING=");
}
