#!/usr/bin/env bash
# Fuzzes what inkan parses from outside with AFL++ (cargo-afl on the stable toolchain). The
# test command runs it when INKAN_FUZZ_SECS is set; every test run replays the corpora and
# mutations of them through the same functions (tests/tests/fuzz_corpus.rs).
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]      default: INKAN_FUZZ_SECS or 10 s, every target
#
# INKAN_FUZZ_JOBS=N runs N targets at once (default 1, one after the other).
# Targets: csr, ocsp_request, signer_frame, admin_request, pem_input, est_body, otp_input. Each starts from its seed
# corpus in tests/fuzz/corpus/TARGET; findings go to target/fuzz/afl/TARGET. Any crash or hang
# fails the run and names the input. Needs afl++ (Debian) and cargo-afl (crates.io).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
secs="${1:-${INKAN_FUZZ_SECS:-10}}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(csr ocsp_request signer_frame admin_request pem_input est_body otp_input)

export CARGO_TARGET_DIR="$root/target/fuzz"
cd "$here"
# Builds AFL++'s runtime for this rustc once (it says "already built" afterwards).
cargo afl config --build >/dev/null 2>&1 || true
cargo afl build --release --quiet

jobs="${INKAN_FUZZ_JOBS:-1}"

# Fuzzes one target and prints its figures; fails on any crash or hang.
fuzz_one() {
  local target="$1" out="$CARGO_TARGET_DIR/afl/$1"
  rm -rf "$out"
  mkdir -p "$out"
  AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_QUIET=1 \
    cargo afl fuzz -V "$secs" -i "corpus/$target" -o "$out" -- "$CARGO_TARGET_DIR/release/$target" \
    >"$out/afl.log" 2>&1 || { echo "fuzz $target: afl-fuzz failed"; tail -20 "$out/afl.log"; return 1; }
  local stats="$out/default/fuzzer_stats"
  get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
  local crashes
  crashes=$(find "$out/default/crashes" "$out/default/hangs" -type f ! -name README.txt 2>/dev/null | wc -l)
  printf 'fuzz %-14s %6s s  %10s execs  %8s/s  corpus %5s  edges %5s  coverage %7s  crashes+hangs %s\n' \
    "$target" "$(get run_time)" "$(get execs_done)" "$(get execs_per_sec)" "$(get corpus_count)" \
    "$(get edges_found)" "$(get bitmap_cvg)" "$crashes"
  if [ "$crashes" -gt 0 ]; then
    find "$out/default/crashes" "$out/default/hangs" -type f ! -name README.txt | sed 's/^/  input: /'
    return 1
  fi
}

failed=0
running=()
for target in "${targets[@]}"; do
  if [ "${#running[@]}" -ge "$jobs" ]; then
    wait "${running[0]}" || failed=1
    running=("${running[@]:1}")
  fi
  fuzz_one "$target" &
  running+=("$!")
done
for pid in "${running[@]}"; do
  wait "$pid" || failed=1
done
exit "$failed"
