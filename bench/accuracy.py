#!/usr/bin/env python3
"""Word errors of several amanuensis configurations on a wider set of speech than the
public clips: each clip perturbed with noise and speed, so that a numeric change is judged
on some 2,800 words instead of the clips' 292, where one word is 0.34 points.

The set is made once, deterministically (fixed seeds), under the cargo target directory:
every 16-kHz speech clip of tests/data/audio/manifest.tsv (the jfk copies at other sample
rates, the long concatenation and the clips without speech left out), each as recorded
and in 7 perturbations:
- white Gaussian noise at 25, 15 and 10 dB signal-to-noise ratio (against the clip's RMS);
- speed 0.9 and 1.1 (resampled by linear interpolation: tempo and pitch move together, as
  in the speed perturbation of speech-recognition training);
- speed 0.9 and 1.1 with noise at 20 dB.

Each configuration transcribes every file in one process (`transcribe -o DIR -f txt`,
language en) at each beam size. A configuration is `NAME=ARGS`: ARGS are words passed to
`transcribe`, except words of the form `VAR=VALUE` with VAR in capitals, which are set in
the environment. The first configuration is the baseline: besides its word errors against
the manifest, every other configuration is also counted against it (words of its
transcripts that differ, and files that differ at all).

Usage: bench/accuracy.py [--binary target/release/amanuensis] [--beam 1,5]
                         [--only-clean] NAME=ARGS [NAME=ARGS ...]
Example: bench/accuracy.py "f32=--compute-type f32" "int8=--compute-type int8"
"""

import argparse
import array
import csv
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import wave
import zlib
from pathlib import Path

from wer import wer_counts  # bench/wer.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests/data/audio"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))
SET_DIR = TARGET / "bench/accuracy-set"
LEFT_OUT = {"jfk_44k1_stereo.wav", "jfk_8k.wav", "long_public_concat.wav"}
# (name, speed, SNR in dB or None)
PERTURBATIONS = [
    ("clean", 1.0, None),
    ("snr25", 1.0, 25.0),
    ("snr15", 1.0, 15.0),
    ("snr10", 1.0, 10.0),
    ("speed0.9", 0.9, None),
    ("speed1.1", 1.1, None),
    ("speed0.9-snr20", 0.9, 20.0),
    ("speed1.1-snr20", 1.1, 20.0),
]


def die(msg):
    print(f"accuracy: error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_pcm16(path):
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getframerate() != 16000:
            die(f"{path}: expected 16-kHz mono 16-bit PCM")
        samples = array.array("h")
        samples.frombytes(w.readframes(w.getnframes()))
    return [s / 32768.0 for s in samples]


def write_pcm16(path, samples):
    out = array.array("h", (max(-32768, min(32767, round(s * 32768.0))) for s in samples))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(out.tobytes())


def resample(x, speed):
    """Plays x `speed` times as fast (linear interpolation)."""
    if speed == 1.0:
        return list(x)
    n = int(len(x) / speed)
    out = []
    for i in range(n):
        t = i * speed
        j = int(t)
        f = t - j
        a = x[j]
        b = x[j + 1] if j + 1 < len(x) else a
        out.append(a + (b - a) * f)
    return out


def add_noise(x, snr_db, seed):
    rms = math.sqrt(sum(s * s for s in x) / max(len(x), 1))
    sigma = rms / (10 ** (snr_db / 20))
    rng = random.Random(seed)
    return [s + rng.gauss(0.0, sigma) for s in x]


def make_set(only_clean):
    """[(file path, reference transcript)], writing the perturbed files if missing."""
    with open(DATA / "manifest.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    SET_DIR.mkdir(parents=True, exist_ok=True)
    items = []
    made = 0
    for row in rows:
        name, text = row["file"], row["transcript"].strip()
        if name in LEFT_OUT or not text or int(row["sample_rate"]) != 16000:
            continue
        base = None
        for k, (tag, speed, snr) in enumerate(PERTURBATIONS):
            if only_clean and tag != "clean":
                continue
            out = SET_DIR / f"{Path(name).stem}.{tag}.wav"
            if not out.exists():
                base = base if base is not None else read_pcm16(DATA / name)
                x = resample(base, speed)
                if snr is not None:
                    x = add_noise(x, snr, seed=zlib.crc32(f"{name}/{tag}".encode()))
                write_pcm16(out, x)
                made += 1
            items.append((out, text))
    if made:
        print(f"wrote {made} perturbed file(s) under {SET_DIR}", flush=True)
    return items


def parse_config(spec):
    name, sep, rest = spec.partition("=")
    if not sep or not name:
        die(f"configuration '{spec}': expected NAME=ARGS")
    env, args = {}, []
    for word in rest.split():
        var, eq, value = word.partition("=")
        if eq and var.isupper() and not var.startswith("-"):
            env[var] = value
        else:
            args.append(word)
    return name, env, args


def transcribe_all(binary, items, env, args, beam):
    """{file path: text} for every item, one process."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [str(binary), "transcribe", "--language", "en", "--beam-size", str(beam),
               "-f", "txt", "-o", out, *args, *[str(p) for p, _ in items]]
        run_env = dict(os.environ, **env)
        t = time.monotonic()
        r = subprocess.run(cmd, env=run_env, capture_output=True, text=True)
        wall = time.monotonic() - t
        if r.returncode != 0:
            die(f"{' '.join(cmd[:8])} ... failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        texts = {}
        for p, _ in items:
            txt = Path(out) / (p.stem + ".txt")
            texts[p] = txt.read_text().strip() if txt.exists() else ""
    return texts, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(TARGET / "release/amanuensis"))
    ap.add_argument("--beam", default="1,5")
    ap.add_argument("--only-clean", action="store_true", help="the clips as recorded only")
    ap.add_argument("configs", nargs="+", metavar="NAME=ARGS")
    a = ap.parse_args()
    if not Path(a.binary).exists():
        die(f"{a.binary} not found; build with `cargo build --release`")
    configs = [parse_config(c) for c in a.configs]
    items = make_set(a.only_clean)
    ref_words = sum(wer_counts(t, t)[1] for _, t in items)
    print(f"{len(items)} files, {ref_words} reference words; binary {a.binary}", flush=True)
    for beam in [int(b) for b in a.beam.split(",")]:
        print(f"\nbeam {beam}:", flush=True)
        base = None
        for name, env, args in configs:
            texts, wall = transcribe_all(a.binary, items, env, args, beam)
            errors = sum(wer_counts(ref, texts[p])[0] for p, ref in items)
            line = (f"  {name:<14} word errors {errors:5d} / {ref_words}"
                    f"  WER {100 * errors / ref_words:6.2f} %  ({wall:6.1f} s)")
            if base is None:
                base = texts
            else:
                moved = sum(wer_counts(base[p], texts[p])[0] for p, _ in items)
                files = sum(1 for p, _ in items if base[p] != texts[p])
                line += f"  against {configs[0][0]}: {moved} words moved, {files} files differ"
            print(line, flush=True)


if __name__ == "__main__":
    main()
