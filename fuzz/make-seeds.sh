#!/usr/bin/env bash
# Writes the seed corpora (fuzz/seeds/<target>/) from the repository's own files: short
# cuts of tests/data/audio/jfk.wav encoded by ffmpeg into every container and codec the
# audio module reads, the graph files, the kernel manifest, a small vocabulary and
# tokenizer.json, and plugin descriptors. The outputs are committed; run this again only
# to change them (ffmpeg's output varies with its version). The CTranslate2 and ONNX seeds
# come from the weights-tools test writers (see fuzz/README.md); the ONNX ones are written
# by `cargo test --release -p amanuensis-weights-tools -- --ignored write_onnx_fuzz_seeds`.
set -euo pipefail
cd "$(dirname "$0")"
root=..
jfk=$root/tests/data/audio/jfk.wav

ff() { ffmpeg -hide_banner -loglevel error -y -ss 1.0 -t "$1" -i "$jfk" "${@:2}"; }

a=seeds/audio; o=seeds/audio_ogg_opus; m=seeds/audio_mp4
mkdir -p "$a" "$o" "$m" seeds/graph seeds/manifest seeds/vocabulary seeds/tokenizer_json \
  seeds/plugin_descriptor seeds/weights seeds/ct2 seeds/multipart

# WAV in every sample format the reader takes, and the header shapes it checks.
ff 0.3 -c:a pcm_s16le "$a/s16-16k.wav"
ff 0.3 -ar 8000 -c:a pcm_u8 "$a/u8-8k.wav"
ff 0.05 -ar 44100 -ac 2 -c:a pcm_f32le "$a/f32-44k1-stereo.wav"
ff 0.05 -ar 22050 -c:a pcm_s24le "$a/s24-22k05.wav"
ff 0.05 -ar 48000 -c:a pcm_f64le "$a/f64-48k.wav"
ff 0.2 -ar 8000 -c:a pcm_alaw "$a/alaw-8k.wav"
ff 0.2 -ar 8000 -c:a pcm_mulaw "$a/mulaw-8k.wav"
ff 0.1 -ar 8000 -ac 3 -c:a pcm_s16le "$a/extensible-3ch.wav"
ff 0.1 -ar 8000 -c:a pcm_s32le "$a/s32-8k.wav"
# Other containers read by symphonia.
ff 0.1 -c:a pcm_s16be "$a/s16.aiff"
ff 0.1 -c:a pcm_s16le "$a/s16.caf"
ff 0.5 -c:a flac "$a/jfk.flac"
ff 0.5 -c:a libmp3lame -b:a 32k "$a/jfk.mp3"
ff 0.5 -c:a mp2 -b:a 32k "$a/jfk.mp2"
ff 0.5 -c:a libvorbis -q:a 0 "$a/vorbis.ogg"
ff 0.3 -c:a flac "$a/flac.ogg"
ff 0.5 -c:a aac -b:a 24k "$a/jfk.aac"
ff 0.5 -c:a libopus -b:a 16k "$a/opus.webm"
ff 0.5 -c:a libvorbis -q:a 0 "$a/vorbis.mka"
ff 0.5 -c:a libmp3lame -b:a 32k "$a/mp3.mka"
ff 0.3 -c:a flac "$a/flac.mka"
ff 0.5 -c:a aac -b:a 24k "$a/aac.mka"
# Ogg Opus (our demuxer): mono, stereo, 5.1 (mapping family 1), a chained file.
ff 0.5 -c:a libopus -b:a 16k "$o/mono.opus"
ff 0.3 -ac 2 -c:a libopus -b:a 24k "$o/stereo.opus"
ff 0.2 -ac 6 -c:a libopus -b:a 48k -mapping_family 1 "$o/surround-5.1.opus"
ff 0.2 -c:a libopus -b:a 16k -frame_duration 60 "$o/frames-60ms.opus"
cat "$o/mono.opus" "$o/frames-60ms.opus" > "$o/chained.opus"
cp "$o"/mono.opus "$o"/stereo.opus "$a"/
# MP4 (our edit-list reader): AAC, ALAC, Opus.
ff 0.5 -c:a aac -b:a 24k "$m/aac.m4a"
ff 0.1 -c:a alac "$m/alac.m4a"
ff 0.5 -c:a libopus -b:a 16k "$m/opus.mp4"
ff 0.5 -c:a aac -b:a 24k -movflags +faststart "$m/aac-faststart.m4a"
cp "$m"/aac.m4a "$a"/

# Graph files and the kernel manifest, as committed.
cp "$root/examples/plugin-op/graphs/swish-mlp.graph" seeds/graph/
cp "$root/graphs/whisper-base.graph" seeds/graph/
cp "$root/xrt/kernels/npu/manifest.json" seeds/manifest/

python3 - <<'PY'
import json, struct

def byte_char(b):
    printable = lambda x: 0x21 <= x <= 0x7E or 0xA1 <= x <= 0xAC or 0xAE <= x <= 0xFF
    if printable(b):
        return chr(b)
    return chr(0x100 + sum(1 for x in range(b) if not printable(x)))

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>",
            "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
            "<|notimestamps|>"]
G = byte_char(32)
extra = ["th", "the", G + "the", G + "t"]
merges = ["t h", "th e", G + " the", G + " t"]
tokens = [byte_char(b) for b in range(256)] + extra + SPECIALS + ["<|0.00|>", "<|0.02|>"]
open("data/small-vocabulary.txt", "w").write("\n".join(tokens) + "\n")
open("seeds/vocabulary/small.txt", "w").write("\n".join(tokens) + "\n")

# The head and the special-token tail of the real vocabulary.
real = open("../tests/data/vocabulary.txt", encoding="utf-8").read().split("\n")
eot = real.index("<|endoftext|>")
open("seeds/vocabulary/real-head-and-specials.txt", "w").write(
    "\n".join(real[:1500] + real[eot:]))

eot = tokens.index("<|endoftext|>")
def tok_json(pre, merge_list, normalizer=None):
    added = [{"id": eot + k, "content": s, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for k, s in enumerate(SPECIALS)]
    return json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": None, "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "vocab": {t: i for i, t in enumerate(tokens[:eot])}, "merges": merge_list}})
bl = lambda aps, rx: {"type": "ByteLevel", "add_prefix_space": aps, "trim_offsets": True,
                      "use_regex": rx}
open("seeds/tokenizer_json/whisper-like.json", "w").write(tok_json(bl(False, True), merges))
open("seeds/tokenizer_json/prefix-space.json", "w").write(tok_json(bl(True, True), merges))
open("seeds/tokenizer_json/no-regex-pairs.json", "w").write(
    tok_json(bl(False, False), [m.split(" ") for m in merges]))
open("seeds/tokenizer_json/with-text", "wb").write(
    tok_json(bl(False, True), merges).encode() + b"\0 the thing <|en|><|0.02|> \xc3\xa9t\xc3\xa9")

# Plugin descriptors: this build's own (flags 63), and ones failing each check.
def desc(flags, magic=b"AMNSPLG\0", abi=1, size=0, fp=0, strs=("p", "1.0", "", "", "")):
    out = bytes([flags]) + magic + struct.pack("<IIQ", abi, size, fp)
    for s in strs:
        b = s.encode() if isinstance(s, str) else s
        out += struct.pack("<H", len(b)) + b
    return out
d = "seeds/plugin_descriptor/"
open(d + "own-build", "wb").write(desc(63))
open(d + "foreign-strings", "wb").write(desc(7, strs=("p", "1", "0.0.1", "rustc 1.0.0", "x86_64-unknown-linux-gnu")))
open(d + "bad-magic", "wb").write(desc(0, magic=b"ELF\0\0\0\0\0"))
open(d + "bad-abi", "wb").write(desc(0, abi=2))
open(d + "null-name", "wb").write(desc(63) [:25] + struct.pack("<H", 0xFFFF))
open(d + "long-name", "wb").write(desc(63, strs=(b"", "1", "", "", ""))[:25] + struct.pack("<H", 5000))
open(d + "not-utf8", "wb").write(desc(63, strs=(b"\xff\xfe", "1", "", "", "")))

# safetensors files for the swish-mlp declarations (f32) and the small f16/i32 set.
def st(tensors, meta=None):
    header, data = {}, b""
    if meta:
        header["__metadata__"] = meta
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data
f32 = lambda n: struct.pack("<%df" % n, *[0.25 * (i % 7) for i in range(n)])
open("seeds/weights/swish-mlp.safetensors", "wb").write(st([
    ("fc1.weight", "F32", [96, 64], f32(96 * 64)), ("fc1.bias", "F32", [96], f32(96)),
    ("fc2.weight", "F32", [32, 96], f32(32 * 96)), ("fc2.bias", "F32", [32], f32(32))],
    {"format": "pt"}))
open("seeds/weights/small-mixed.safetensors", "wb").write(st([
    ("a", "F16", [2, 3], struct.pack("<6e", *[1.0, -2.0, 0.5, 0.0, 3.0, 65504.0])),
    ("b", "I32", [4], struct.pack("<4i", 1, -1, 7, 2**31 - 1)),
    ("c", "F32", [], struct.pack("<f", 3.5)),
    ("extra", "BF16", [2], b"\0\0\0\0")]))
PY
# Upload forms of the server (boundary AMANUENSIS-FUZZ, as the multipart target sets it).
python3 - <<'PY'
wav = open("../tests/data/audio/jfk.wav", "rb").read()[:2048]
def form(fields):
    out = b""
    for name, val, fn in fields:
        out += b"--AMANUENSIS-FUZZ\r\n"
        if fn:
            out += (b'Content-Disposition: form-data; name="' + name + b'"; filename="' + fn
                    + b'"\r\nContent-Type: audio/wav\r\n\r\n')
        else:
            out += b'Content-Disposition: form-data; name="' + name + b'"\r\n\r\n'
        out += val + b"\r\n"
    return out + b"--AMANUENSIS-FUZZ--\r\n"
seeds = {
    "minimal": [(b"file", wav, b"jfk.wav"), (b"model", b"whisper-1", None)],
    "all-fields": [(b"file", wav, b"jfk.wav"), (b"model", b"base", None), (b"language", b"en", None),
                   (b"prompt", b"Ask not.", None), (b"response_format", b"verbose_json", None),
                   (b"temperature", b"0.2", None), (b"timestamp_granularities[]", b"word", None),
                   (b"timestamp_granularities[]", b"segment", None), (b"stream", b"false", None),
                   (b"unknown_field", b"x", None)],
    "stream-text": [(b"model", b"whisper-1", None), (b"file", wav[:300], b"a.wav"),
                    (b"response_format", b"text", None), (b"stream", b"true", None)],
    "bad-values": [(b"file", b"", b"empty.wav"), (b"model", b"nope", None), (b"language", b"xx", None),
                   (b"temperature", b"-1", None), (b"response_format", b"mp3", None)],
    "no-file": [(b"model", b"whisper-1", None), (b"prompt", b"\xff\xfe", None)],
}
for k, v in seeds.items():
    open("seeds/multipart/" + k, "wb").write(form(v))
open("seeds/multipart/truncated", "wb").write(form(seeds["minimal"])[:700])
PY
ls seeds/*/ | head -80
du -sh seeds/*
