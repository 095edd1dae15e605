#!/usr/bin/env bash
# Fuzzes SSECore's parser with libFuzzer for SECONDS (default 60), from the committed seeds and
# the corpus kept in .build-fuzz/corpus. Exits non-zero on a crash or a broken oracle, leaving
# the input that did it in .build-fuzz/.
#   scripts/fuzz.sh 600      # ten minutes, while developing
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
out=.build-fuzz
mkdir -p "$out/corpus"

# One module of SSECore's sources and the fuzz target, with libFuzzer and AddressSanitizer.
swiftc -parse-as-library -module-name SSECoreFuzz -package-name herald -O -g \
    -sanitize=fuzzer,address \
    Sources/SSECore/*.swift Fuzz/ParserFuzz.swift \
    -o "$out/parser-fuzz" 2> >(grep -v "Cannot export local symbol" >&2)

# The Swift runtime's own crash handler would fight AddressSanitizer's: leave crashes to libFuzzer.
SWIFT_BACKTRACE=enable=no "$out/parser-fuzz" "$out/corpus" Fuzz/seeds \
    -dict=Fuzz/sse.dict -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$out/" -print_final_stats=1 2>&1 | tee "$out/last-run.log" | grep -E "^#|DONE|ERROR|SUMMARY|stat::number_of_executed_units|crash|deadly" | tail -n 12
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    echo "fuzz: libFuzzer failed (status $status); see $out/last-run.log" >&2
    exit "$status"
fi
echo "fuzz: no crash and no oracle failure in ${seconds}s"
