//! Intel AMX (Sapphire Rapids and later): whether the tile unit may be used, and the tile
//! configuration the int8 and bf16 kernels share. The kernels themselves are in `int8.rs`
//! and `bf16.rs`, next to the other paths they must agree with.

#![cfg(target_arch = "x86_64")]

use std::arch::asm;
use std::arch::x86_64::{__cpuid, __cpuid_count};

/// Rows of every tile the kernels configure.
pub(crate) const TILE_ROWS: usize = 16;
/// Bytes of a tile row: 64 int8 values, or 32 pairs of bf16.
pub(crate) const TILE_ROW_BYTES: usize = 64;

/// Whether the CPU has AMX tiles with int8 products and the OS lets this process use them.
pub(crate) fn int8_usable() -> bool {
    tiles_granted() && leaf7_edx() & (1 << 25) != 0
}

/// Whether the CPU has AMX tiles with bf16 products and the OS lets this process use them.
pub(crate) fn bf16_usable() -> bool {
    tiles_granted() && leaf7_edx() & (1 << 22) != 0
}

/// AMX-TILE (bit 24 of CPUID leaf 7's EDX) and the OS's grant, asked once per process:
/// Linux hands the tile state out on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, since
/// kernel 5.16), for every thread of the process.
fn tiles_granted() -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GRANTED.get_or_init(|| {
        let off = std::env::var("AMANUENSIS_AMX").is_ok_and(|v| v == "0" || v == "off");
        !off && leaf7_edx() & (1 << 24) != 0 && os_grants_tiles()
    })
}

/// CPUID leaf 7's EDX, read once: `cpuid` traps to the hypervisor in a virtual machine
/// (tens of microseconds), and the kernels ask before every product.
fn leaf7_edx() -> u32 {
    static EDX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *EDX.get_or_init(read_leaf7_edx)
}

fn read_leaf7_edx() -> u32 {
    // SAFETY: `cpuid` exists on every x86_64 CPU; leaf 7 is read only if reported.
    // (`__cpuid` is a safe function on newer compilers.)
    #[allow(unused_unsafe)]
    unsafe {
        if __cpuid(0).eax < 7 {
            return 0;
        }
        __cpuid_count(7, 0).edx
    }
}

#[cfg(target_os = "linux")]
fn os_grants_tiles() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments; on kernels without it, or
    // without AMX support, it fails and the tiles stay unused.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn os_grants_tiles() -> bool {
    false
}

/// `ldtilecfg`'s 64-byte operand.
#[repr(C, align(64))]
pub(crate) struct TileConfig([u8; 64]);

impl TileConfig {
    /// Palette 1, all eight tiles [`TILE_ROWS`] rows of [`TILE_ROW_BYTES`].
    pub(crate) fn all_16_by_64() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&(TILE_ROW_BYTES as u16).to_le_bytes());
            c[48 + t] = TILE_ROWS as u8;
        }
        TileConfig(c)
    }

    /// Configures this thread's tiles.
    ///
    /// # Safety
    /// AMX must be usable ([`int8_usable`] or [`bf16_usable`]).
    pub(crate) unsafe fn load(&self) {
        asm!("ldtilecfg [{}]", in(reg) self.0.as_ptr(), options(nostack, readonly));
    }
}

/// Bytes of one accumulator tile: 16 rows of 16 four-byte sums.
pub(crate) const ACCUMULATOR_BYTES: usize = TILE_ROWS * TILE_ROW_BYTES;

/// Zeroes the four accumulator tiles the kernels sum into, tmm0–tmm3 (a 32-row × 2-panel
/// block: tmm0 rows 0–15 × panel 0, tmm1 rows 0–15 × panel 1, tmm2 and tmm3 the same
/// for rows 16–31).
///
/// # Safety
/// This thread's tiles are configured ([`TileConfig::load`]).
#[inline]
pub(crate) unsafe fn zero_accumulators() {
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem)
    );
}

/// Stores tmm0–tmm3 at `p`, one after the other, each as [`ACCUMULATOR_BYTES`] of
/// consecutive rows.
///
/// # Safety
/// This thread's tiles are configured; `p` is valid for `4 · ACCUMULATOR_BYTES` bytes of
/// writes.
#[inline]
pub(crate) unsafe fn store_accumulators(p: *mut u8) {
    asm!(
        "tilestored [{p0} + {s}], tmm0",
        "tilestored [{p1} + {s}], tmm1",
        "tilestored [{p2} + {s}], tmm2",
        "tilestored [{p3} + {s}], tmm3",
        p0 = in(reg) p,
        p1 = in(reg) p.add(ACCUMULATOR_BYTES),
        p2 = in(reg) p.add(2 * ACCUMULATOR_BYTES),
        p3 = in(reg) p.add(3 * ACCUMULATOR_BYTES),
        s = in(reg) TILE_ROW_BYTES,
        options(nostack)
    );
}

/// Releases this thread's tiles (so that the OS need not save them on a switch).
///
/// # Safety
/// AMX must be usable.
pub(crate) unsafe fn release() {
    asm!("tilerelease", options(nostack, nomem));
}
