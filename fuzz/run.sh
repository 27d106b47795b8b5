#!/usr/bin/env bash
# Fuzz every target (or those named) with AFL++ for SECONDS each, all at once, then report
# each one's executions, crashes and hangs from AFL's fuzzer_stats. Exits 1 when any
# target crashed or hung.
#
#   cargo install cargo-afl --locked && cargo afl config --build    # once (stable Rust)
#   fuzz/run.sh 600                      # every target, 10 minutes each
#   fuzz/run.sh 30 ctnetlink config      # some
#   FUZZ_KEEP=1 fuzz/run.sh 600          # then keep the new paths found in
#                                        # fuzz/corpus/TARGET/id-* (keep.sh)
#
# Findings stay in fuzz/out/TARGET/default/{crashes,hangs}; replay one with
# `fuzz/target/release/fuzz TARGET < FILE`. A hang is an input that takes over 1 s
# (-t 1000): a loop, or a quadratic blow-up.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(proc_net sock_diag ctnetlink fd_link config names timespec log_format)
fi
cargo afl build --release --quiet
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_SKIP_CRASHES=0 AFL_QUIET=1
pids=()
for t in "${TARGETS[@]}"; do
    rm -rf "out/$t"
    mkdir -p "out/$t"
    cargo afl fuzz -i "corpus/$t" -o "out/$t" -t 1000 -V "$SECONDS_EACH" -- \
        target/release/fuzz "$t" > "out/$t.log" 2>&1 &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
bad=0
for t in "${TARGETS[@]}"; do
    s="out/$t/default/fuzzer_stats"
    if [ ! -f "$s" ]; then
        echo "$t: no fuzzer_stats (see fuzz/out/$t.log)"; tail -5 "out/$t.log"; bad=1; continue
    fi
    get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$s"; }
    crashes=$(get saved_crashes); hangs=$(get saved_hangs)
    echo "$t: $(get execs_done) execs in $(get run_time) s ($(get execs_per_sec)/s), $(get corpus_count) paths, $crashes crashes, $hangs hangs"
    [ "$crashes" = 0 ] && [ "$hangs" = 0 ] || bad=1
    if [ "${FUZZ_KEEP:-0}" = 1 ]; then ./keep.sh "$t"; fi
done
[ $status = 0 ] && [ $bad = 0 ]
