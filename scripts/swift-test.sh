#!/usr/bin/env bash
# Runs the Swift tests (arguments go to `swift test`) and fails the run when SwiftNIO reported an API
# misuse, such as an EmbeddedEventLoop used off its thread: NIO only prints those today, and a later
# SwiftNIO turns each into a crash. The full output stays in .build/swift-test.log.
set -uo pipefail
swift=${SWIFT:-swift}
log=.build/swift-test.log
mkdir -p .build
"$swift" test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
misuses=$(grep -c "NIO API misuse" "$log")
if [ "$misuses" -gt 0 ]; then
  echo "swift-test: SwiftNIO reported $misuses API misuse(s); the first ones (full output in $log):" >&2
  grep -m 3 -B 5 "NIO API misuse" "$log" | grep -E "Test Case|NIO API misuse" >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
