#!/usr/bin/env python3
"""Reference speech probabilities and segments of Silero VAD v6 for tests/vad.rs.

Runs faster-whisper 1.2.1's own VAD code (its bundled silero_vad_v6.onnx on onnxruntime,
`SileroVADModel` and `get_speech_timestamps`) on public clips of ../audio and writes
silero_v6_reference.json beside this script. Made once; run again only to check:

    python3 -m venv /tmp/fw && /tmp/fw/bin/pip install faster-whisper==1.2.1 onnxruntime==1.32.0
    /tmp/fw/bin/python tests/data/vad/make_fixtures.py

The audio is read as 16-bit PCM / 32768, which is what the runtime's decoder gives for
these 16 kHz mono files, so that the comparison is of the model alone.
"""
import json
import os
import sys
import wave

import numpy as np
import onnxruntime
import faster_whisper
from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

HERE = os.path.dirname(os.path.abspath(__file__))
AUDIO = os.path.join(HERE, "..", "audio")
CLIPS = [
    "jfk.wav",
    "osr_us_0034_harvard.wav",
    "fw_stereo_left.wav",
    "long_public_concat.wav",
    "white_noise_5s.wav",
]
# The defaults, and a set that splits and pads differently (max_speech_duration_s forces
# the split path; a short min_silence cuts at pauses).
OPTION_SETS = {
    "default": {},
    "tight": {
        "threshold": 0.6,
        "min_speech_duration_ms": 250,
        "min_silence_duration_ms": 300,
        "speech_pad_ms": 100,
        "max_speech_duration_s": 8.0,
    },
}


def read(path):
    with wave.open(path, "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getframerate() == 16000, path
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data.astype(np.float32) / 32768.0


def main():
    model = get_vad_model()
    out = {
        "faster_whisper": faster_whisper.__version__,
        "onnxruntime": onnxruntime.__version__,
        "options": OPTION_SETS,
        "clips": [],
    }
    for name in CLIPS:
        audio = read(os.path.join(AUDIO, name))
        # As get_speech_timestamps pads it: to whole windows plus one.
        padded = np.pad(audio, (0, 512 - audio.shape[0] % 512))
        probs = model(padded)
        clip = {
            "file": name,
            "samples": int(audio.shape[0]),
            "probs": [float(p) for p in np.asarray(probs).reshape(-1)],
            "segments": {},
        }
        for key, kw in OPTION_SETS.items():
            segs = get_speech_timestamps(audio, VadOptions(**kw))
            clip["segments"][key] = [[int(s["start"]), int(s["end"])] for s in segs]
        out["clips"].append(clip)
        print(f"{name}: {len(clip['probs'])} windows, segments {clip['segments']['default']}", file=sys.stderr)
    with open(os.path.join(HERE, "silero_v6_reference.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
