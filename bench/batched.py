#!/usr/bin/env python3
"""The batched pipeline against sequential decoding, on the CPU, whole process.

Transcribes each recording with amanuensis sequentially (the window loop, conditioned on
the previous text) and with `--vad --batch-size N` (speech chunks of at most 30 s, N
encoded and decoded as one batch), alternating run by run, and prints each mode's wall
times, their median, its peak RSS, the ratio of the medians (sequential / batched: above
1, batched is faster) and both word error rates against the manifest transcript. With
--fw, faster-whisper's BatchedInferencePipeline (same batch size, from PyPI into a virtual
environment of its own, as bench/compare.py) runs alongside for reference.

Default recordings: tests/data/audio/long_public_concat.wav (75.5 s) and that recording
three times over (226.5 s, written under the target directory).

Usage: bench/batched.py [--runs 3] [--threads 2] [--batch-size 8] [--beam 5]
                        [--no-timestamps] [--fw] [FILE ...]
"""

import argparse
import os
import statistics
import sys
import wave
from pathlib import Path

from compare import (DATA, TARGET, ROOT, cpu_ticks, die, manifest, run_measured, tripled,
                     venv_python)
from wer import wer_counts

FW_BATCHED = r"""
import sys
from faster_whisper import WhisperModel, BatchedInferencePipeline
model_dir, audio, beam, threads, batch = sys.argv[1:6]
model = WhisperModel(model_dir, device="cpu", compute_type="int8",
                     cpu_threads=int(threads), num_workers=1)
pipe = BatchedInferencePipeline(model=model)
segments, _info = pipe.transcribe(audio, beam_size=int(beam), batch_size=int(batch),
                                  language="en")
print(" ".join(s.text.strip() for s in segments))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--compute-type", default="auto",
                    help="amanuensis compute type of both runs (auto, f32, int8)")
    ap.add_argument("--no-timestamps", action="store_true",
                    help="batched windows decode without timestamp tokens (faster-whisper's "
                         "batched default)")
    ap.add_argument("--fw", action="store_true",
                    help="also run faster-whisper's BatchedInferencePipeline (int8)")
    ap.add_argument("--binary", type=Path, default=TARGET / "release/amanuensis")
    ap.add_argument("--model-dir", type=Path,
                    default=Path(os.environ.get("AMANUENSIS_MODELS", str(ROOT / "models"))))
    a = ap.parse_args()
    if a.runs < 1 or a.threads < 1 or a.batch_size < 2:
        die("--runs and --threads must be at least 1, --batch-size at least 2")
    if not a.binary.exists():
        die(f"{a.binary} not found (run: cargo build --release)")
    if not (a.model_dir / "silero-vad").is_dir():
        die(f"{a.model_dir}/silero-vad not found (run: scripts/fetch-model.sh vad)")

    refs = manifest()
    files = a.files
    if not files:
        long = DATA / "long_public_concat.wav"
        x3 = TARGET / "bench/long_public_concat_x3.wav"
        tripled(long, x3)
        files = [long, x3]
        refs[x3.name] = " ".join([refs[long.name]] * 3)
    for f in files:
        if not f.exists():
            die(f"{f}: no such file")

    env = dict(os.environ, AMANUENSIS_MODELS=str(a.model_dir))
    base = [a.binary, "transcribe", "--device", "cpu", "-q", "--language", "en",
            "--threads", str(a.threads), "--beam-size", str(a.beam),
            "--compute-type", a.compute_type]
    batched = ["--vad", "--batch-size", str(a.batch_size)]
    if a.no_timestamps:
        batched.append("--no-timestamps")
    print(f"amanuensis: {a.binary}, {a.threads} threads, beam {a.beam}, "
          f"compute type {a.compute_type}; batched: "
          f"{' '.join(batched)}")
    print(f"{a.runs} run(s) of each, alternating; wall time and peak RSS of the whole process")
    fw = None
    if a.fw:
        py = venv_python("1.2.1")
        runner = TARGET / "bench-venv/fw_batched.py"
        runner.write_text(FW_BATCHED)
        fw = ([py, runner, a.model_dir / "whisper-base-ct2"],
              dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(a.threads)))

    for f in files:
        with wave.open(str(f)) as w:
            seconds = w.getnframes() / w.getframerate()
        ref = refs.get(f.name)
        engines = {
            "sequential": (base + [f], env),
            f"--batch-size {a.batch_size}": (base + batched + [f], env),
        }
        if fw is not None:
            engines[f"faster-whisper batched {a.batch_size}"] = (
                fw[0] + [f, a.beam, a.threads, a.batch_size], fw[1])
        results = {name: [] for name in engines}
        t0 = cpu_ticks()
        for _ in range(a.runs):
            for name, (cmd, e) in engines.items():
                results[name].append(run_measured([str(c) for c in cmd], e))
        print(f"\n{f.name} ({seconds:.1f} s):")
        medians = {}
        for name, runs in results.items():
            walls = [r[0] for r in runs]
            medians[name] = statistics.median(walls)
            line = (f"  {name:<28} median {medians[name]:7.2f} s  "
                    f"(runs {', '.join(f'{w:.2f}' for w in walls)})  "
                    f"peak RSS {max(r[1] for r in runs):6.0f} MB")
            if ref is not None:
                e, n = wer_counts(ref, runs[-1][2])
                line += f"  WER {100 * e / max(n, 1):.2f} % ({e}/{n} words)"
            print(line)
        t1 = cpu_ticks()
        if t0 and t1:
            busy, steal = t1[0] - t0[0], t1[1] - t0[1]
            print(f"  CPU time stolen by the hypervisor during these runs: "
                  f"{100 * steal / max(busy + steal, 1):.0f} % of the busy time")
        names = list(results)
        print(f"  ratio (sequential / batched): {medians[names[0]] / medians[names[1]]:.2f}")


if __name__ == "__main__":
    main()
