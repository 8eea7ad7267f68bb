#!/usr/bin/env bash
# Compiles the XRT shim (xrt/shim/npu_shim.cpp) against the headers of XRT 2.25, so its
# hw_context (>= 2.14) and runlist (>= 2.18) paths are checked on machines whose own XRT is
# older (Debian bookworm has 2.13) or absent.
#
# XRT 2.25 comes from Debian trixie-backports (libxrt-dev). Its .deb is fetched with apt
# under a private configuration (own sources list, package lists and cache under the cache
# directory): the system's sources stay untouched and nothing from trixie is installed; the
# .deb is only unpacked. Its binaries need a newer glibc, its headers do not.
#
# Cached: the headers are unpacked once under $AMANUENSIS_CACHE (default
# ~/.cache/amanuensis)/xrt-2.25 and reused. Compiles only (no link), with -Werror, in three
# configurations: everything (2.25 as it is), hw_context without runlists (2.14-2.17), and
# neither (2.13). Exits non-zero on any failure.
#
# With --cargo it also type-checks the amanuensis-xrt crate and its tests (cargo check, no
# link) with build.rs pointed at these headers through XILINX_XRT and a stub
# libxrt_coreutil, so build.rs's detection and the Rust side of cfg(xrt_hwctx, xrt_runlist)
# are checked too (target directory under the cache; a few minutes the first time).
#
# Needs: apt-get and dpkg-deb (Debian), g++ and uuid-dev (the XRT headers include
# <uuid/uuid.h>); as root on a fresh machine it installs the last two from the system's
# own sources.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
shim_dir="$(cd "$here/../shim" && pwd)"
series="2.25"
cache="${AMANUENSIS_CACHE:-$HOME/.cache/amanuensis}/xrt-$series"
root="$cache/root"
stamp="$cache/unpacked"
include="$root/usr/include"
suite="trixie-backports"
mirror="${AMANUENSIS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

say() { echo "xrt-$series: $*"; }
die() {
  echo "xrt-$series: error: $*" >&2
  exit 1
}

as_root_install() {
  # Installs bookworm packages from the system's own sources (root only).
  if [ "$(id -u)" != 0 ]; then
    die "missing $*; install them (apt-get install $*) or run as root"
  fi
  say "installing $* from the system's sources"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "$@"
}

# --- tools ------------------------------------------------------------------------------
need=()
command -v g++ >/dev/null 2>&1 || need+=(g++)
[ -f /usr/include/uuid/uuid.h ] || need+=(uuid-dev)
if [ ! -f "$stamp" ]; then
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found (this script needs Debian's apt)"
  command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"
  # trixie's archive keys arrived in a bookworm point release of debian-archive-keyring.
  if [ ! -f /usr/share/keyrings/debian-archive-trixie-automatic.gpg ]; then
    need+=(debian-archive-keyring)
  fi
fi
if [ ${#need[@]} -gt 0 ]; then
  as_root_install "${need[@]}"
fi

# --- headers (cached) -------------------------------------------------------------------
if [ -f "$stamp" ] && [ -f "$include/xrt/xrt_device.h" ]; then
  say "using cached headers in $root ($(cat "$stamp"))"
else
  say "fetching libxrt-dev $series from $suite (private apt configuration in $cache/apt)"
  apt_dir="$cache/apt"
  rm -rf "$apt_dir" "$root" "$root.partial"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/parts" \
    "$apt_dir/prefs" "$apt_dir/debs"
  echo "deb [signed-by=$keyring] $mirror $suite main" >"$apt_dir/sources.list"
  apt_opts=(
    -q
    -o "Dir::Etc::SourceList=$apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=$apt_dir/parts"
    -o "Dir::Etc::Preferences=$apt_dir/preferences"
    -o "Dir::Etc::PreferencesParts=$apt_dir/prefs"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
    -o "Acquire::Languages=none"
  )
  if [ "$(id -u)" = 0 ]; then
    # The private directories are root's; apt's download user could not write to them.
    apt_opts+=(-o "APT::Sandbox::User=root")
  fi
  apt-get "${apt_opts[@]}" update >"$apt_dir/update.log" 2>&1 ||
    {
      cat "$apt_dir/update.log" >&2
      die "apt-get update of $suite failed"
    }
  # The newest libxrt-dev of the series (the suite may move on to a later one).
  version="$(apt-cache "${apt_opts[@]}" madison libxrt-dev |
    awk -F'|' -v s="$series" '{gsub(/ /, "", $2); if ($2 ~ ("^(1:)?" s "\\.")) {print $2; exit}}')"
  [ -n "$version" ] || die "no libxrt-dev $series.x in $suite ($(apt-cache "${apt_opts[@]}" madison libxrt-dev | tr '\n' ';'))"
  (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" download "libxrt-dev=$version") ||
    die "downloading libxrt-dev=$version failed"
  deb="$(ls "$apt_dir"/debs/libxrt-dev_*.deb)"
  mkdir -p "$root.partial"
  dpkg-deb -x "$deb" "$root.partial"
  mv "$root.partial" "$root"
  rm -rf "$apt_dir/debs" "$apt_dir/cache"
  echo "libxrt-dev $version" >"$stamp"
  say "unpacked libxrt-dev $version into $root"
fi

# --- what the build script looks for -----------------------------------------------------
for h in xrt/xrt_device.h xrt/xrt_kernel.h xrt/xrt_bo.h xrt/xrt_hw_context.h \
  xrt/experimental/xrt_kernel.h xrt/detail/version-slim.h; do
  [ -f "$include/$h" ] || die "$include/$h is missing from the package"
done
grep -q 'register_xclbin' "$include/xrt/xrt_device.h" ||
  die "xrt_device.h declares no register_xclbin"
grep -q 'class runlist' "$include/xrt/experimental/xrt_kernel.h" ||
  die "xrt/experimental/xrt_kernel.h declares no xrt::runlist"
version="$(sed -n 's/.*xrt_build_version\[\] = "\([0-9.]*\)".*/\1/p' "$include/xrt/detail/version-slim.h")"
case "$version" in
  "$series".*) ;;
  *) die "headers say XRT '$version', expected $series.x" ;;
esac

# --- compile ----------------------------------------------------------------------------
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
declared="$(grep -oE '\bnpu_[a-z0-9_]+\(' "$shim_dir/npu_shim.h" | tr -d '(' | sort -u)"
compile() {
  local name="$1"
  shift
  say "compiling npu_shim.cpp against XRT $version ($name)"
  g++ -std=c++17 -c -Wall -Wextra -Werror \
    -I "$shim_dir" -isystem "$include" \
    "-DNPU_SHIM_XRT_VERSION=\"$version\"" "$@" \
    -o "$out/$name.o" "$shim_dir/npu_shim.cpp"
  # Every entry point of npu_shim.h is defined in every configuration (the Rust side
  # declares them all).
  local defined
  defined="$(nm -g --defined-only "$out/$name.o" | awk '$3 ~ /^npu_/ {print $3}' | sort -u)"
  if [ "$defined" != "$declared" ]; then
    diff <(echo "$declared") <(echo "$defined") >&2 || true
    die "$name: the entry points defined differ from those npu_shim.h declares (< declared, > defined)"
  fi
  say "  $(echo "$defined" | wc -l) entry points defined"
}
compile full -DNPU_SHIM_HAVE_HWCTX -DNPU_SHIM_HAVE_RUNLIST
compile hwctx-only -DNPU_SHIM_HAVE_HWCTX
compile no-hwctx
say "ok: the shim compiles against XRT $version with and without hw_context and runlists"

if [ "${1:-}" = "--cargo" ]; then
  fake="$cache/fake-xrt"
  mkdir -p "$fake/lib"
  ln -sfn "$include" "$fake/include"
  # Only its presence matters to build.rs; cargo check never links.
  [ -f "$fake/lib/libxrt_coreutil.so" ] ||
    echo 'int amanuensis_stub;' | gcc -shared -x c -o "$fake/lib/libxrt_coreutil.so" -
  say "cargo check -p amanuensis-xrt --all-targets with XILINX_XRT=$fake"
  (cd "$here/../.." && XILINX_XRT="$fake" CARGO_TARGET_DIR="$cache/target" \
    cargo check -q -p amanuensis-xrt --all-targets)
  cfgs="$(cat "$cache"/target/debug/build/amanuensis-xrt-*/output | sed -n 's/^cargo:rustc-cfg=//p' | sort -u | tr '\n' ' ')"
  for want in xrt_shim xrt_hwctx xrt_runlist; do
    case " $cfgs" in
      *" $want "*) ;;
      *) die "build.rs did not enable $want against XRT $version (got: $cfgs)" ;;
    esac
  done
  say "ok: build.rs detects XRT $version with $cfgs; the crate type-checks"
fi
