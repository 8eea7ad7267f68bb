#!/usr/bin/env python3
"""amanuensis against faster-whisper on the CPU, whole process, side by side.

Installs faster-whisper from PyPI into a virtual environment of its own (under the cargo
target directory, once), then transcribes each recording with both engines, alternating
run by run so that a change in the machine's load hits both alike: --runs runs of each
engine per recording and decoding mode. Every run is a fresh process (load, audio decode,
transcription, exit). Both use --threads threads, the same whisper-base weights
(faster-whisper reads the CTranslate2 model that scripts/fetch-model.sh keeps beside the
converted one), language detection, temperature fallback and conditioning on the previous
text; voice-activity filtering off.

Prints, per recording and mode, each engine's wall times, their median, its peak RSS, the
ratio of the medians (faster-whisper / amanuensis: above 1, amanuensis is faster) and both
word error rates against the manifest transcript.

Default recordings: tests/data/audio/long_public_concat.wav (75.5 s) and that recording
three times over (226.5 s, written under the target directory).

--compute-type takes a comma-separated list of amanuensis compute types (default: auto,
its default); each is run as an engine of its own and gets its own ratio.

Usage: bench/compare.py [--runs 3] [--threads 2] [--beam 1,5] [--fw-compute-type int8]
                        [--compute-type auto]
                        [--binary target/release/amanuensis] [--model-dir models]
                        [--fw-version 1.2.1] [FILE ...]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import wave
from pathlib import Path

from wer import wer_counts  # bench/wer.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests/data/audio"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))

# Run by the virtual environment's Python: one transcription, the text on stdout.
FW_RUNNER = r"""
import sys
from faster_whisper import WhisperModel
model_dir, audio, beam, threads, compute_type = sys.argv[1:6]
model = WhisperModel(model_dir, device="cpu", compute_type=compute_type,
                     cpu_threads=int(threads), num_workers=1)
segments, _info = model.transcribe(audio, beam_size=int(beam), vad_filter=False)
print(" ".join(s.text.strip() for s in segments))
"""


def die(msg):
    print(f"compare: error: {msg}", file=sys.stderr)
    sys.exit(1)


def manifest():
    """{file name: transcript} of the public clips."""
    out = {}
    for line in (DATA / "manifest.tsv").read_text().splitlines()[1:]:
        f = line.split("\t")
        if len(f) >= 6 and f[5].strip():
            out[f[0]] = f[5]
    return out


def tripled(src, dst):
    """Writes src three times over into dst (a longer recording from the public clips)."""
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(src)) as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    with wave.open(str(dst), "wb") as o:
        o.setparams(params)
        o.writeframes(frames * 3)


def venv_python(version):
    """The Python of a virtual environment holding faster-whisper==version."""
    venv = TARGET / f"bench-venv/faster-whisper-{version}"
    py = venv / "bin/python"
    if py.exists() and subprocess.run([py, "-c", "import faster_whisper"],
                                      capture_output=True).returncode == 0:
        return py
    print(f"compare: installing faster-whisper {version} from PyPI into {venv}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([py, "-m", "pip", "install", "--quiet", f"faster-whisper=={version}"])
    if r.returncode != 0:
        die(f"pip could not install faster-whisper=={version}")
    return py


def cpu_ticks():
    """(busy, steal) clock ticks of all CPUs so far, from /proc/stat (None elsewhere).
    Steal is time the hypervisor gave to other guests: on a shared virtual machine it
    slows both engines and is reported so that a run's figures can be judged."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (f + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def run_measured(cmd, env=None):
    """(wall seconds, peak RSS in MB, stdout) of one whole process; the peak RSS is the
    child's own, from wait4."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # Read the pipes to the end first (a full pipe would block the child), then reap it
    # with wait4 for its resource use.
    out = p.stdout.read()
    err = p.stderr.read()
    _pid, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        die(f"{' '.join(map(str, cmd))} exited {p.returncode}: "
            f"{err.decode(errors='replace')[-2000:]}")
    return dt, usage.ru_maxrss / 1024, out.decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beam", default="1,5", help="beam sizes to compare (1 is greedy)")
    ap.add_argument("--fw-compute-type", default="int8")
    ap.add_argument("--compute-type", default="auto",
                    help="amanuensis compute types to run, comma-separated (auto, f32, int8)")
    ap.add_argument("--fw-version", default="1.2.1")
    ap.add_argument("--binary", type=Path, default=TARGET / "release/amanuensis")
    ap.add_argument("--model-dir", type=Path,
                    default=Path(os.environ.get("AMANUENSIS_MODELS", str(ROOT / "models"))))
    a = ap.parse_args()
    if a.runs < 1 or a.threads < 1:
        die("--runs and --threads must be at least 1")
    try:
        beams = [int(b) for b in a.beam.split(",")]
    except ValueError:
        die(f"--beam: not a comma-separated list of numbers: {a.beam!r}")
    if not a.binary.exists():
        die(f"{a.binary} not found (run: cargo build --release)")
    ct2 = a.model_dir / "whisper-base-ct2"
    if not (ct2 / "model.bin").exists():
        die(f"{ct2}/model.bin not found (run: scripts/fetch-model.sh base)")

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

    py = venv_python(a.fw_version)
    runner = TARGET / "bench-venv/fw_runner.py"
    runner.write_text(FW_RUNNER)
    fw_env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(a.threads))
    am_env = dict(os.environ, AMANUENSIS_MODELS=str(a.model_dir))
    print(f"amanuensis: {a.binary} (--device cpu --threads {a.threads})")
    print(f"faster-whisper {a.fw_version}: compute type {a.fw_compute_type}, "
          f"cpu_threads {a.threads}, model {ct2}")
    print(f"{a.runs} run(s) of each, alternating; wall time and peak RSS of the whole process")

    for f in files:
        with wave.open(str(f)) as w:
            seconds = w.getnframes() / w.getframerate()
        ref = refs.get(f.name)
        for beam in beams:
            engines = {
                f"amanuensis {ct}": ([a.binary, "transcribe", "--device", "cpu", "-q",
                                      "--threads", str(a.threads), "--beam-size", str(beam),
                                      "--compute-type", ct, f], am_env)
                for ct in a.compute_type.split(",")
            }
            fw_name = f"faster-whisper {a.fw_compute_type}"
            engines[fw_name] = ([py, runner, ct2, f, beam, a.threads, a.fw_compute_type], fw_env)
            results = {name: [] for name in engines}
            t0 = cpu_ticks()
            for _ in range(a.runs):
                for name, (cmd, env) in engines.items():
                    results[name].append(run_measured([str(c) for c in cmd], env))
            mode = "greedy" if beam == 1 else f"beam {beam}"
            print(f"\n{f.name} ({seconds:.1f} s), {mode}:")
            medians = {}
            for name, runs in results.items():
                walls = [r[0] for r in runs]
                medians[name] = statistics.median(walls)
                line = (f"  {name:<22} median {medians[name]:7.2f} s  "
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
            for name in results:
                if name != fw_name:
                    print(f"  ratio (faster-whisper / {name}): "
                          f"{medians[fw_name] / medians[name]:.2f}")


if __name__ == "__main__":
    main()
