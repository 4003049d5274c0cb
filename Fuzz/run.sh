#!/usr/bin/env bash
# Fuzz the protocol decoder and the policy file parser with libFuzzer.
#
#   bash Fuzz/run.sh              # 60 seconds each (what CI runs)
#   bash Fuzz/run.sh 3600         # an hour each
#   bash Fuzz/run.sh 0            # until stopped (Ctrl-C)
#
# Builds into .build-fuzz with -sanitize=fuzzer,address. New inputs go to
# .build-fuzz/corpus/<target> (the seeds in Fuzz/corpus are read, never written);
# a crash leaves its input in .build-fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail
seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scratch=.build-fuzz
for target in fuzz-decoder fuzz-policy; do
    swift build -c release --scratch-path "$scratch" --product "$target" \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DFUZZING -Xswiftc -use-ld=lld >/dev/null
done
bin=$(swift build -c release --scratch-path "$scratch" --show-bin-path)
status=0
for pair in fuzz-decoder:decoder fuzz-policy:policy; do
    target=${pair%%:*}
    corpus=${pair##*:}
    mkdir -p "$scratch/corpus/$corpus" "$scratch/artifacts/$target"
    echo "== $target: ${seconds}s"
    if ! SWIFT_BACKTRACE=enable=no "$bin/$target" -max_total_time="$seconds" -max_len=9000 -timeout=10 -rss_limit_mb=4096 \
            -artifact_prefix="$scratch/artifacts/$target/" -print_final_stats=1 \
            "$scratch/corpus/$corpus" "Fuzz/corpus/$corpus" 2>"$scratch/$target.log"; then
        status=1
        tail -40 "$scratch/$target.log"
    fi
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$scratch/$target.log" || true
done
exit $status
