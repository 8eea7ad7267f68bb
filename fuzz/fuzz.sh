#!/usr/bin/env bash
# Builds and runs the fuzz targets (libFuzzer through cargo-fuzz; see fuzz/README.md).
#
#   fuzz/fuzz.sh build                    build every target (ASan, debug assertions)
#   fuzz/fuzz.sh run TARGET SECONDS [ARG]  fuzz one target, growing fuzz/corpus/TARGET
#   fuzz/fuzz.sh campaign TARGET CPU_SECS  like run, budgeted in CPU time (or 1M executions)
#   fuzz/fuzz.sh replay                   every target once over its corpus, no mutation
#   fuzz/fuzz.sh smoke [SECONDS [SEED]]    every target for SECONDS (default 45) from the
#                                          committed corpus and seeds, one per core; fails
#                                          on any crash, hang (10 s per input) or
#                                          out-of-memory exit (CI runs `smoke 60`)
#   fuzz/fuzz.sh cmin TARGET               minimise fuzz/corpus/TARGET (keeps every edge)
#   fuzz/fuzz.sh repro TARGET FILE...      run inputs once (a crash's reproduction)
#
# Extra ARGs of `run` go to libFuzzer (e.g. -runs=1000000).
set -euo pipefail
cd "$(dirname "$0")"

# cargo-fuzz passes -Z flags (sanitizer, coverage instrumentation) to rustc; the stable
# toolchain accepts them when told it is bootstrapping itself.
export RUSTC_BOOTSTRAP=1

TARGETS=(audio audio_ogg_opus audio_mp4 graph weights ct2 onnx manifest plugin_descriptor
  vocabulary tokenizer_json multipart)

# Largest input per target (bytes): above the largest real seed, small enough for speed.
max_len() {
  case "$1" in
    graph) echo 131072 ;;
    plugin_descriptor) echo 8192 ;;
    ct2 | onnx | manifest) echo 32768 ;;
    *) echo 65536 ;;
  esac
}

dict() {
  case "$1" in
    audio*) echo dicts/audio.dict ;;
    plugin_descriptor | weights) echo "" ;;
    *) echo "dicts/$1.dict" ;;
  esac
}

# A number from libFuzzer's final stats (-print_final_stats=1) in LOG, or "?".
final_stat() { grep -oE "stat::$2: *[0-9]+" "$1" | grep -oE '[0-9]+$' || echo "?"; }

triple=$(rustc -vV | sed -n 's/^host: //p')
bin() { echo "target/$triple/release/$1"; }

# Per input: 10 s at most (a hang), 2 GiB of RSS at most; single allocations are bounded
# by the targets' allocator (fuzz/src/lib.rs), whose zero-filled cap (4 GiB) the malloc
# limit leaves to it.
flags() {
  local d
  d=$(dict "$1")
  echo "-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=4097 -max_len=$(max_len "$1") -print_final_stats=1 -detect_leaks=0 ${d:+-dict=$d}"
}

build() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
  fi
  cargo fuzz build --debug-assertions
}

check_target() {
  local t
  for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done
  echo "unknown target '$1' (targets: ${TARGETS[*]})" >&2
  exit 2
}

cmd=${1:-}
case "$cmd" in
  build)
    build
    ;;
  run)
    t=$2 secs=$3
    check_target "$t"
    shift 3
    mkdir -p "corpus/$t" "artifacts/$t"
    # shellcheck disable=SC2046
    "$(bin "$t")" $(flags "$t") -max_total_time="$secs" -artifact_prefix="artifacts/$t/" \
      "$@" "corpus/$t" "seeds/$t"
    ;;
  campaign)
    # Like `run`, but the budget is CPU time, not wall time, so that a run on a busy
    # machine (or niced) still gets its full share: it stops at 1M executions or when the
    # fuzzer has used SECS of CPU, whichever comes first.
    t=$2 secs=$3
    check_target "$t"
    shift 3
    mkdir -p "corpus/$t" "artifacts/$t"
    "$(bin "$t")" $(flags "$t") -runs=1000000 -artifact_prefix="artifacts/$t/" \
      "$@" "corpus/$t" "seeds/$t" &
    pid=$!
    trap 'kill -INT $pid 2>/dev/null' INT TERM
    tck=$(getconf CLK_TCK)
    cpu=0
    while kill -0 "$pid" 2>/dev/null; do
      sleep 2
      # utime and stime, fields 14 and 15 of /proc/PID/stat (the name has no spaces).
      stat=$(cat "/proc/$pid/stat" 2>/dev/null) || break
      cpu=$(echo "$stat" | awk -v t="$tck" '{ print int(($14 + $15) / t) }')
      if [ "$cpu" -ge "$secs" ]; then
        kill -INT "$pid" 2>/dev/null
        break
      fi
    done
    set +e
    wait "$pid"
    rc=$?
    set -e
    echo "fuzz campaign: $t: ${cpu} s of CPU, exit $rc"
    # 72 is libFuzzer's exit code when interrupted (here: the CPU budget was reached).
    [ "$rc" -eq 0 ] || [ "$rc" -eq 72 ]
    ;;
  replay)
    # Every target once over its committed corpus and seeds, without mutation: a
    # deterministic check that no input the fuzzers ever kept crashes, hangs or exhausts
    # memory now (`smoke`, which CI runs, does this first and then mutates).
    build
    failed=()
    for t in "${TARGETS[@]}"; do
      log=$(mktemp)
      mkdir -p "corpus/$t"
      # shellcheck disable=SC2046
      if "$(bin "$t")" $(flags "$t") -runs=0 "corpus/$t" "seeds/$t" >"$log" 2>&1; then
        echo "fuzz replay: $t: $(final_stat "$log" number_of_executed_units) inputs, no crash"
      else
        tail -40 "$log"
        failed+=("$t")
      fi
      rm -f "$log"
    done
    if [ ${#failed[@]} -gt 0 ]; then
      echo "fuzz replay: FAILED: ${failed[*]}" >&2
      exit 1
    fi
    ;;
  smoke)
    # Seeded, so that a run is reproducible: a CI failure replays with the same command.
    # Targets run side by side, one per core (FUZZ_JOBS overrides), each for SECS of wall
    # time; each first runs every input of its committed corpus and seeds, so a smoke run
    # includes the replay.
    secs=${2:-45}
    seed=${3:-1}
    jobs=${FUZZ_JOBS:-$(nproc)}
    build
    work=$(mktemp -d)
    smoke_one() {
      local t=$1 out="$work/$1"
      local rc=0
      # A target without a committed corpus yet reads an empty one (libFuzzer exits on a
      # missing directory).
      mkdir -p "$out" "artifacts/$t" "corpus/$t"
      # New inputs go to a scratch directory: the committed corpus is only read.
      # shellcheck disable=SC2046
      "$(bin "$t")" $(flags "$t") -max_total_time="$secs" -seed="$seed" \
        -artifact_prefix="artifacts/$t/" "$out" "corpus/$t" "seeds/$t" >"$out.log" 2>&1 || rc=$?
      echo "$rc" >"$out.rc"
    }
    echo "== fuzz smoke: ${#TARGETS[@]} targets, ${secs}s each, $jobs at a time (seed $seed)"
    for t in "${TARGETS[@]}"; do
      while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
      echo "fuzz smoke: $t started"
      smoke_one "$t" &
    done
    wait
    failed=()
    for t in "${TARGETS[@]}"; do
      if [ "$(cat "$work/$t.rc")" = 0 ]; then
        echo "fuzz smoke: $t: $(final_stat "$work/$t.log" number_of_executed_units) executions," \
          "peak RSS $(final_stat "$work/$t.log" peak_rss_mb) MB, no crash"
      else
        echo "== fuzz smoke: $t FAILED (exit $(cat "$work/$t.rc")); the end of its log:"
        tail -40 "$work/$t.log"
        failed+=("$t")
      fi
    done
    rm -rf "$work"
    if [ ${#failed[@]} -gt 0 ]; then
      echo "fuzz smoke: FAILED: ${failed[*]} (inputs saved under fuzz/artifacts/; replay one with fuzz/fuzz.sh repro TARGET FILE)" >&2
      exit 1
    fi
    echo "fuzz smoke: ${#TARGETS[@]} targets, no crash, hang or out-of-memory exit"
    ;;
  cmin)
    t=$2
    check_target "$t"
    new=$(mktemp -d)
    # shellcheck disable=SC2046
    # Edges only (no hit-count buckets): every covered edge keeps an input, and the
    # corpus stays small enough to commit.
    "$(bin "$t")" $(flags "$t") -use_counters=0 -merge=1 "$new" "corpus/$t" "seeds/$t"
    rm -rf "corpus/$t"
    mv "$new" "corpus/$t"
    echo "corpus/$t: $(ls "corpus/$t" | wc -l) files, $(du -sb "corpus/$t" | cut -f1) bytes"
    ;;
  repro)
    t=$2
    check_target "$t"
    shift 2
    # shellcheck disable=SC2046
    "$(bin "$t")" $(flags "$t") "$@"
    ;;
  *)
    sed -n '2,/^set -euo/p' "$(basename "$0")" | sed '$d' >&2
    exit 2
    ;;
esac
