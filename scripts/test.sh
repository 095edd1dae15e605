#!/usr/bin/env bash
# The whole test suite, as README.md names it and .ci/run calls it. Idempotent; needs only Swift.
#
#   scripts/test.sh
#
# Steps: install the browser test tools (Chromium, selenium; idempotent); build everything with
# the tests and fail on any warning in our own code; check that the benchmark still runs and
# agrees on its counts (a quick debug run, not a measure); fuzz the parser for a bounded time
# (HERALD_FUZZ_SECONDS, default 45); run the examples in headless Chromium; then the unit,
# property, network and process tests, last, so that their summary closes the output.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== test tools"
scripts/install-test-tools.sh

echo "== build (package and tests)"
if ! swift build --build-tests >"$log" 2>&1; then
    cat "$log"
    exit 1
fi
tail -n 1 "$log"
if grep -E "^$PWD/(Sources|Tests|Benchmarks/Sources)/.*(warning|error):" "$log" | sort -u | grep .; then
    echo "test.sh: warnings in our code (above); Herald builds without warnings" >&2
    exit 1
fi

echo "== benchmark check (quick, debug)"
if ! swift build --package-path Benchmarks >"$log" 2>&1; then
    cat "$log"
    exit 1
fi
Benchmarks/.build/debug/SSEParsingBenchmark --quick >/dev/null
echo "the benchmark runs, and every parser counts every event of every case"
.build/debug/HistoryBenchmark --quick >/dev/null
echo "the history benchmark runs, and the history keeps what its retention says"

echo "== fuzz (${HERALD_FUZZ_SECONDS:-45} s)"
scripts/fuzz.sh "${HERALD_FUZZ_SECONDS:-45}"

echo "== examples, the hub's dashboard and Mercure's conformance suite in a real browser"
python3 -m pytest -q -p no:cacheprovider Tests/Browser

echo "== tests"
# One test at a time (about 2 minutes): the suite starts throwaway PostgreSQL servers, hub processes
# and nginx, and all of them at once on two cores starved some past their time limits.
swift test --skip-build --no-parallel
