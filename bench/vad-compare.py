#!/usr/bin/env python3
"""Silero VAD in amanuensis against faster-whisper's (onnxruntime), same file, same run.

For each recording, alternating run by run: `amanuensis vad --json FILE` (a fresh process;
its JSON carries the time of the VAD itself, audio decoding and model loading excluded),
then faster-whisper's own `get_speech_timestamps` in a fresh Python process (timed the
same way, around the model and the segment search). Prints each side's median VAD time,
the ratio (faster-whisper / amanuensis: above 1, amanuensis is faster), both whole-process
wall times, and whether the speech segments are equal.

faster-whisper comes from PyPI in a virtual environment of its own (bench/compare.py's).
Both sides run on one thread: faster-whisper's VAD sets onnxruntime to one thread, and
amanuensis gets --threads 1.

Usage: bench/vad-compare.py [--runs 5] [--binary target/release/amanuensis] [FILE ...]
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import DATA, ROOT, die, run_measured, tripled, venv_python, TARGET  # noqa: E402

FW_VAD = r"""
import json, sys, time, wave
import numpy as np
from faster_whisper.vad import get_speech_timestamps, get_vad_model
with wave.open(sys.argv[1]) as w:
    assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
    audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
get_vad_model()  # loading, as amanuensis's time excludes its own
t0 = time.perf_counter()
segs = get_speech_timestamps(audio)
dt = time.perf_counter() - t0
print(json.dumps({"vad_seconds": dt, "segments": [[s["start"], s["end"]] for s in segs]}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--binary", default=str(ROOT / "target/release/amanuensis"))
    ap.add_argument("--fw-version", default="1.2.1")
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    if not Path(a.binary).exists():
        die(f"{a.binary} not found: build it with `cargo build --release`")
    files = [Path(f) for f in a.files]
    if not files:
        long = DATA / "long_public_concat.wav"
        tripled(long, TARGET / "bench-data/long_public_concat_x3.wav")
        files = [long, TARGET / "bench-data/long_public_concat_x3.wav"]
    py = venv_python(a.fw_version)
    runner = TARGET / "bench-venv/fw_vad_runner.py"
    runner.parent.mkdir(parents=True, exist_ok=True)
    runner.write_text(FW_VAD)
    for f in files:
        ours, theirs, ours_wall, theirs_wall = [], [], [], []
        same = True
        for _ in range(a.runs):
            dt, _rss, out = run_measured([a.binary, "--threads", "1", "vad", "--json", "--device", "cpu", str(f)])
            o = json.loads(out)
            ours.append(o["vad_seconds"])
            ours_wall.append(dt)
            dt, _rss, out = run_measured([str(py), str(runner), str(f)])
            t = json.loads(out)
            theirs.append(t["vad_seconds"])
            theirs_wall.append(dt)
            same &= [[s["start_sample"], s["end_sample"]] for s in o["segments"]] == t["segments"]
        mo, mt = statistics.median(ours), statistics.median(theirs)
        print(f"{f.name}: VAD median amanuensis {mo * 1e3:.1f} ms, faster-whisper {mt * 1e3:.1f} ms, "
              f"ratio {mt / mo:.2f}; whole process {statistics.median(ours_wall):.2f} s vs "
              f"{statistics.median(theirs_wall):.2f} s; segments {'equal' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
