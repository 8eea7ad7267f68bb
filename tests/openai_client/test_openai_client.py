"""`amanuensis serve` driven by the official OpenAI Python client.

Starts the server binary on a free loopback port, transcribes samples/jfk.wav in every
response format (json, text, srt, vtt, verbose_json with word timestamps) and with
stream=True, and checks that the text is the jfk text each time and that the subtitles
parse (with the independent `srt` and `webvtt-py` parsers).

Usage: python test_openai_client.py PATH_TO_AMANUENSIS_BINARY
"""

import io
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import openai
import srt
import webvtt

ROOT = Path(__file__).resolve().parents[2]
JFK = ("And so my fellow Americans, ask not what your country can do for you, "
       "ask what you can do for your country.")
KEY = "sk-amanuensis-test"
# The client marks translations deprecated; the endpoint is still part of the API.
warnings.filterwarnings("ignore", category=DeprecationWarning)


def words(text):
    """Lower-case words without punctuation: timestamped decoding may punctuate differently."""
    return [w for w in re.sub(r"[^\w\s']", " ", text.lower()).split()]


def start_server(binary):
    env = dict(os.environ, AMANUENSIS_API_KEY=KEY)
    env.setdefault("AMANUENSIS_MODELS", str(ROOT / "models"))
    proc = subprocess.Popen(
        [binary, "serve", "--port", "0", "--device", "cpu"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        sys.stderr.write("server: " + line)
        if line.startswith("listening on "):
            return proc, line.split()[2]
    raise SystemExit("the server exited before listening")


def main():
    binary = sys.argv[1]
    proc, url = start_server(binary)
    failures = []

    def check(name, fn):
        t0 = time.time()
        try:
            fn()
            print(f"ok   {name} ({time.time() - t0:.1f} s)")
        except Exception as e:  # noqa: BLE001 - report every case, then fail
            failures.append(name)
            print(f"FAIL {name}: {type(e).__name__}: {e}")

    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    audio = (ROOT / "samples/jfk.wav").read_bytes()

    def create(**kw):
        return client.audio.transcriptions.create(
            model="whisper-1", file=("jfk.wav", io.BytesIO(audio)), **kw)

    def json_format():
        r = create()
        assert r.text == JFK, r.text

    def text_format():
        r = create(response_format="text")
        assert isinstance(r, str), type(r)
        assert r.strip() == JFK, r

    def srt_format():
        r = create(response_format="srt")
        subs = list(srt.parse(r))
        assert len(subs) >= 1
        assert words(" ".join(s.content for s in subs)) == words(JFK), r
        for a, b in zip(subs, subs[1:]):
            assert a.end <= b.start, (a, b)
        assert subs[-1].end.total_seconds() <= 11.0

    def vtt_format():
        r = create(response_format="vtt")
        cues = list(webvtt.from_buffer(io.StringIO(r)))
        assert len(cues) >= 1
        assert words(" ".join(c.text for c in cues)) == words(JFK), r
        assert cues[-1].end_in_seconds <= 11.0

    def verbose_json_words():
        r = create(response_format="verbose_json", timestamp_granularities=["word", "segment"])
        assert words(r.text) == words(JFK), r.text
        assert r.language == "english", r.language
        assert abs(r.duration - 11.0) < 1e-6, r.duration
        assert [w.word for w in r.words] and words(" ".join(w.word for w in r.words)) == words(JFK)
        for w in r.words:
            assert 0.0 <= w.start <= w.end <= 11.0, w
        assert words(" ".join(s.text for s in r.segments)) == words(JFK)

    def streaming():
        stream = create(stream=True)
        deltas, done = [], None
        for event in stream:
            if event.type == "transcript.text.delta":
                deltas.append(event.delta)
            elif event.type == "transcript.text.done":
                done = event.text
        assert done == JFK, done
        assert "".join(deltas) == JFK, deltas

    def translation():
        r = client.audio.translations.create(model="whisper-1", file=("jfk.wav", io.BytesIO(audio)))
        assert r.text == JFK, r.text

    def errors_are_raised_as_openai_errors():
        bad = openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0)
        try:
            bad.audio.transcriptions.create(model="whisper-1", file=("jfk.wav", io.BytesIO(audio)))
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError as e:
            assert e.status_code == 401 and e.body["code"] == "invalid_api_key", e.body
        try:
            create(response_format="docx")
            raise AssertionError("an unknown format was accepted")
        except openai.BadRequestError as e:
            assert e.body["param"] == "response_format", e.body
        try:
            client.audio.transcriptions.create(model="whisper-1", file=("x.wav", io.BytesIO(b"not audio")))
            raise AssertionError("non-audio bytes were accepted")
        except openai.BadRequestError as e:
            assert e.body["code"] == "invalid_audio", e.body

    def models():
        ids = [m.id for m in client.models.list()]
        assert "whisper-1" in ids, ids

    cases = [("json", json_format), ("text", text_format), ("srt", srt_format),
                     ("vtt", vtt_format), ("verbose_json with word timestamps", verbose_json_words),
                     ("stream=True", streaming), ("translation", translation),
                     ("errors", errors_are_raised_as_openai_errors), ("models", models)]
    for name, fn in cases:
        check(name, fn)

    proc.terminate()
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = "killed"
    if code != 0:
        failures.append(f"server exit status {code} after SIGTERM")
    passed = len(cases) - len([f for f in failures if f in dict(cases)])
    print(f"openai {openai.__version__}: {passed} of {len(cases)} cases passed, server exit status {code}"
          + (f"; failed: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
