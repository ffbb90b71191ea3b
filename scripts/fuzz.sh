#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with -sanitize=fuzzer,address and runs each for a bounded time.
#
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   space-separated subset, e.g. "jwt h2" (default: all)
#
# The committed seed corpus (fuzz/corpus/<target>) is only read; inputs that find new coverage go to
# .build-fuzz/runs/corpus/<target>, which later runs start from too. A crash, leak or timeout leaves
# its input in .build-fuzz/runs/artifacts/<target>/ and makes the script fail; reproduce it with
#   .build-fuzz/release/fuzz-<target> <file>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-jwt jwks authorization htpasswd tokens config h2 otlp}"
scratch="$PWD/.build-fuzz"
runs="$scratch/runs"

declare -A max_len=([jwt]=20000 [jwks]=16384 [authorization]=20000 [htpasswd]=4096 [tokens]=4096 [config]=16384 [h2]=16384 [otlp]=16384)

# lld: gold crashes (internal error in format_file_lineno) on some of these links.
echo "building the fuzz targets (release, -sanitize=fuzzer,address)"
swift build -c release --package-path fuzz --scratch-path "$scratch" \
  -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address -Xswiftc -use-ld=lld

failed=()
summary=()
for target in $targets; do
  binary="$scratch/release/fuzz-$target"
  [ -x "$binary" ] || { echo "no fuzz target named $target (see fuzz/Sources)" >&2; exit 2; }
  mkdir -p "$runs/corpus/$target" "$runs/artifacts/$target"
  log="$runs/$target.log"
  dict=()
  [ -f "fuzz/dict/$target.dict" ] && dict=(-dict="fuzz/dict/$target.dict")
  echo "fuzzing $target for ${seconds}s (log: ${log#$PWD/})"
  status=0
  "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="${max_len[$target]:-4096}" \
    -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix="$runs/artifacts/$target/" "$runs/corpus/$target" "fuzz/corpus/$target" \
    >"$log" 2>&1 || status=$?
  runs_done=$(grep -ho 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{sum += $2} END {print sum + 0}')
  rate=$(grep -ho 'stat::average_exec_per_sec: *[0-9]*' "$log" | awk '{sum += $2} END {print sum + 0}')
  corpus=$(find "$runs/corpus/$target" -type f | wc -l)
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    summary+=("$(printf '%-14s %8s %12s %10s %8s  FAILED (exit %s), see %s' "$target" "${seconds}s" "$runs_done" "$rate" "$corpus" "$status" "${log#$PWD/}")")
    grep -E 'ERROR: |SUMMARY: |Fatal error|Test unit written' "$log" | head -5 || true
  else
    summary+=("$(printf '%-14s %8s %12s %10s %8s  ok' "$target" "${seconds}s" "$runs_done" "$rate" "$corpus")")
  fi
done

echo
printf '%-14s %8s %12s %10s %8s  %s\n' target time executions "exec/s" corpus result
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzzing found problems in: ${failed[*]} (inputs in ${runs#$PWD/}/artifacts/)" >&2
  exit 1
fi
