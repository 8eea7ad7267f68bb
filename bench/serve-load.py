#!/usr/bin/env python3
"""Load test of `amanuensis serve` on loopback (standard library only).

Starts the server binary on a free loopback port, then:
  1. transcribes every public clip of tests/data/audio/manifest.tsv once (the reference
     text of each clip, and its word error rate against the manifest);
  2. measures throughput (audio seconds per wall second) with 1 and with 4 concurrent
     clients, each over the whole clip set once per client; with --rounds N, N times,
     alternating, and prints the medians and their ratio (one pass of 1 client lasts about
     10 s, so one round's ratio moves by as much as any difference between settings);
  3. sends --requests requests (default 1000) of the clips, mixed, from --clients
     concurrent clients (default 16), and reports failures, transcripts that differ from
     the clip's reference, p50/p95/p99 latency, throughput, and the server's RSS after the
     first 200 and after the last 200 requests.
Exits 1 when a request failed (other than 429 with a deliberately small --max-queue), a
transcript differed, or RSS grew by 10 % or more.

Usage: bench/serve-load.py [--binary target/release/amanuensis] [--requests 1000]
                           [--clients 16] [--workers 1] [--max-queue 16]
                           [--batch-size N] [--rounds 1]
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from wer import wer_counts  # bench/wer.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests/data/audio"
MAX_CLIP_SECONDS = 12.0


def clips():
    """Public clips with a transcript, at most MAX_CLIP_SECONDS long."""
    out = []
    lines = (DATA / "manifest.tsv").read_text().splitlines()
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) < 6 or not f[5].strip() or float(f[1]) > MAX_CLIP_SECONDS:
            continue
        out.append({"name": f[0], "seconds": float(f[1]), "transcript": f[5],
                    "bytes": (DATA / f[0]).read_bytes()})
    return out


def form(clip):
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'.encode(),
        (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{clip["name"]}"\r\n'
         "Content-Type: audio/wav\r\n\r\n").encode() + clip["bytes"] + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def transcribe(host, port, clip):
    """(status, text or error, seconds)."""
    body, ctype = form(clip)
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(host, port, timeout=600)
    try:
        c.request("POST", "/v1/audio/transcriptions", body=body, headers={"Content-Type": ctype})
        r = c.getresponse()
        data = r.read()
    except OSError as e:
        return 0, f"{type(e).__name__}: {e}", time.perf_counter() - t0
    finally:
        c.close()
    dt = time.perf_counter() - t0
    try:
        j = json.loads(data)
    except ValueError:
        return r.status, data[:200], dt
    return r.status, j.get("text") if r.status == 200 else j, dt


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run_clients(host, port, jobs, n_clients, on_done=None):
    """Runs jobs (clips) from n_clients threads; returns results in completion order."""
    lock = threading.Lock()
    it = iter(enumerate(jobs))
    results = []

    def client():
        while True:
            with lock:
                nxt = next(it, None)
            if nxt is None:
                return
            i, clip = nxt
            status, text, dt = transcribe(host, port, clip)
            with lock:
                results.append((i, clip, status, text, dt))
                if on_done:
                    on_done(len(results))

    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    ap.add_argument("--binary", default=f"{target}/release/amanuensis")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-queue", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="the server's --batch-size (its default when not given)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of the 1- and 4-client throughput measurement, alternating")
    a = ap.parse_args()
    if a.requests < 1:
        sys.exit("--requests must be at least 1")
    if a.rounds < 1:
        sys.exit("--rounds must be at least 1")
    # RSS growth is compared after the first and the last 200 requests: only for 400 or more.
    compare_rss = a.requests >= 400

    env = dict(os.environ)
    env.setdefault("AMANUENSIS_MODELS", str(ROOT / "models"))
    env.pop("AMANUENSIS_API_KEY", None)
    server = subprocess.Popen(
        [a.binary, "serve", "--host", "127.0.0.1", "--port", "0", "--device", "cpu",
         "--workers", str(a.workers), "--max-queue", str(a.max_queue)]
        + ([] if a.batch_size is None else ["--batch-size", str(a.batch_size)]),
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    url = None
    for line in server.stderr:
        if line.startswith("listening on "):
            url = line.split()[2]
            break
    if url is None:
        sys.exit("the server exited before listening")
    threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    port = int(port)
    cs = clips()
    batch = "" if a.batch_size is None else f" --batch-size {a.batch_size}"
    print(f"server: {a.binary} serve --workers {a.workers} --max-queue {a.max_queue}{batch} (pid {server.pid})")
    print(f"clips: {len(cs)} public clips of tests/data/audio (<= {MAX_CLIP_SECONDS:.0f} s), "
          f"{sum(c['seconds'] for c in cs):.1f} s of audio in all")

    # 1. reference transcripts
    ref, errs, n = {}, 0, 0
    for c in cs:
        status, text, _ = transcribe(host, port, c)
        if status != 200:
            server.kill()
            sys.exit(f"reference transcription of {c['name']} failed: {status} {text}")
        ref[c["name"]] = text
        e, w = wer_counts(c["transcript"], text)
        errs, n = errs + e, n + w
    print(f"reference pass: word error rate against the manifest {100 * errs / n:.2f} % ({errs}/{n} words)")

    # 2. throughput with 1 and 4 clients, alternating
    rates = {1: [], 4: []}
    throughput_bad = 0
    for r in range(a.rounds):
        for k in (1, 4):
            jobs = cs * k
            res, wall = run_clients(host, port, jobs, k)
            audio = sum(c["seconds"] for _, c, s, _, _ in res if s == 200)
            bad = sum(1 for _, c, s, t, _ in res if s != 200 or t != ref[c["name"]])
            throughput_bad += bad
            rates[k].append(audio / wall)
            tag = f"round {r + 1}: " if a.rounds > 1 else ""
            print(f"{tag}throughput, {k} concurrent client(s): {audio / wall:.2f} audio s per s "
                  f"({len(jobs)} requests, {audio:.1f} s of audio in {wall:.1f} s; {bad} failed or differed)")
    if a.rounds > 1:
        med = {k: statistics.median(v) for k, v in rates.items()}
        each = ", ".join(f"{100 * (f / o - 1):+.1f} %" for o, f in zip(rates[1], rates[4]))
        print(f"throughput over {a.rounds} rounds, median: 1 client {med[1]:.2f}, 4 clients {med[4]:.2f} "
              f"audio s per s; 4 against 1 {100 * (med[4] / med[1] - 1):+.1f} % (each round: {each})")

    # 3. the load
    jobs = [cs[i % len(cs)] for i in range(a.requests)]
    rss = {}

    def sample(done):
        if done == 200 and compare_rss:
            rss["first"] = rss_mb(server.pid)

    t_start = time.perf_counter()
    res, wall = run_clients(host, port, jobs, a.clients, sample)
    rss["last"] = rss_mb(server.pid)
    ok = [r for r in res if r[2] == 200]
    too_many = [r for r in res if r[2] == 429]
    failed = [r for r in res if r[2] not in (200, 429)]
    differ = [r for r in ok if r[3] != ref[r[1]["name"]]]
    lat = [r[4] for r in ok]
    audio = sum(r[1]["seconds"] for r in ok)
    print(f"load: {a.requests} requests from {a.clients} concurrent clients in {time.perf_counter() - t_start:.1f} s")
    print(f"  answered 200: {len(ok)}; 429 (queue full): {len(too_many)}; failures: {len(failed)}")
    for r in failed[:5]:
        print(f"    failure: {r[1]['name']}: {r[2]} {r[3]}")
    print(f"  transcripts equal to the clip's reference: {len(ok) - len(differ)} of {len(ok)}")
    for r in differ[:5]:
        print(f"    differs: {r[1]['name']}: {r[3]!r}")
    if lat:
        print(f"  latency p50 {pct(lat, 50):.2f} s, p95 {pct(lat, 95):.2f} s, p99 {pct(lat, 99):.2f} s, max {max(lat):.2f} s")
    print(f"  throughput: {audio / wall:.2f} audio s per s ({audio:.0f} s of audio in {wall:.1f} s)")
    growth = 0.0
    if compare_rss:
        growth = 100 * (rss["last"] - rss["first"]) / rss["first"]
        print(f"  server RSS after the first 200 requests {rss['first']:.1f} MB, after the last 200 "
              f"{rss['last']:.1f} MB: growth {growth:+.1f} %")
    else:
        print(f"  server RSS after the last request {rss['last']:.1f} MB (growth is compared from 400 requests)")

    server.terminate()
    code = server.wait(timeout=120)
    print(f"server exit status after SIGTERM: {code}")
    if throughput_bad:
        print(f"requests of the throughput part that failed or differed: {throughput_bad}")
    bad = failed or differ or throughput_bad or growth >= 10 or code != 0
    print("RESULT: " + ("FAIL" if bad else "PASS"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
