#!/usr/bin/env bash
# Re-creates the encodings of jfk.wav that tests/audio_formats.rs reads (run by hand; the
# committed files were made with ffmpeg 5.1.9, Debian 12). Bit rates are pinned so that
# the correlations the tests measure do not move with ffmpeg's defaults.
set -euo pipefail
cd "$(dirname "$0")"
src=../jfk.wav
enc() { # OUT [ffmpeg output options...]
  local out=$1
  shift
  ffmpeg -nostdin -hide_banner -loglevel error -y -i "$src" "$@" "$out"
}
# Whole jfk.wav (11 s): decoded, aligned and transcribed by the tests.
enc jfk.mp3 -c:a libmp3lame -b:a 64k
enc jfk.flac -c:a flac
enc jfk.ogg -c:a libvorbis -q:a 4
enc jfk.opus -c:a libopus -b:a 32k
enc jfk_64k.opus -c:a libopus -b:a 64k
enc jfk.m4a -c:a aac -b:a 64k
enc jfk_alac.m4a -c:a alac
enc jfk_opus.mp4 -c:a libopus -b:a 64k
enc jfk_opus.webm -c:a libopus -b:a 64k
# Other containers: the first 3 s only (48,000 samples), enough to check each container.
for spec in \
  "jfk.aiff -c:a pcm_s16be" \
  "jfk.caf -c:a pcm_s16le" \
  "jfk_flac.ogg -c:a flac" \
  "jfk_flac.mkv -c:a flac" \
  "jfk_vorbis.mkv -c:a libvorbis -q:a 4" \
  "jfk_aac.mkv -c:a aac -b:a 64k" \
  "jfk_mp3.mkv -c:a libmp3lame -b:a 64k" \
  "jfk.aac -c:a aac -b:a 64k" \
  "jfk.mp2 -c:a mp2 -b:a 64k"; do
  # shellcheck disable=SC2086
  enc ${spec%% *} -t 3 ${spec#* }
done
