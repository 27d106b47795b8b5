#!/usr/bin/env bash
# Run integration test binaries N times in a row and count the failures: the check that no
# test depends on a race (issue 30). Builds once, then runs each binary directly, so a run
# costs only the test's own time.
#
#   scripts/repeat-tests.sh [-n RUNS] [--hog K] [--all | NAME…]
#
#   -n RUNS   runs of each NAME (default 20)
#   --hog K   K busy loops (one per core is "a CPU hog") run beside the tests, ended at exit
#   --all     every integration binary: tests/it/ (one binary, its files as modules) and
#             each tests/*.rs
#   NAME      a binary (it, config) or one file of tests/it/ (e.g. connection_log: the
#             binary it with the filter connection_log::)
#   --lib     also the library's unit tests
#
# Prints one line per failed run (NAME, run, the failed tests' names; the whole output is
# kept under the log directory it names) and, last, one line per NAME:
#   connection_log: 20 runs, 0 failed
# (with the time taken) and a closing "N passed, N failed" over every run. Exits 1 if any run failed. Root is
# needed for the namespace tests, as for `cargo test`.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=20 hog=0 lib=0
names=()
while [ $# -gt 0 ]; do
    case "$1" in
        -n) runs=$2; shift 2 ;;
        --hog) hog=$2; shift 2 ;;
        --all)
            for f in tests/*/main.rs; do names+=("$(basename "$(dirname "$f")")"); done
            for f in tests/*.rs; do names+=("$(basename "$f" .rs)"); done
            shift ;;
        --lib) lib=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) echo "repeat-tests: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) names+=("$1"); shift ;;
    esac
done
if [ ${#names[@]} -eq 0 ] && [ $lib -eq 0 ]; then
    echo "repeat-tests: name a test binary (tests/NAME.rs, tests/NAME/main.rs) or a file of tests/it/, --all or --lib (see --help)" >&2
    exit 2
fi
case "$runs" in ''|*[!0-9]*) echo "repeat-tests: -n takes a whole number" >&2; exit 2 ;; esac

# Each NAME is a binary, or a module of tests/it/ run as the binary it with a filter.
declare -A target filter
for n in "${names[@]}"; do
    if [ -f "tests/$n.rs" ] || [ -f "tests/$n/main.rs" ]; then
        target[$n]=$n filter[$n]=""
    elif [ -f "tests/it/$n.rs" ]; then
        target[$n]=it filter[$n]="$n::"
    else
        echo "repeat-tests: no test binary or tests/it/ file named $n" >&2
        exit 2
    fi
done

# Build once; map each target to its executable.
args=()
declare -A wanted
for n in "${names[@]}"; do
    t=${target[$n]}
    [ -n "${wanted[$t]:-}" ] || args+=(--test "$t")
    wanted[$t]=1
done
[ $lib -eq 1 ] && args+=(--lib)
built=$(cargo test --no-run "${args[@]}" 2>&1) || { echo "$built" >&2; exit 1; }
declare -A exe
while read -r src path; do
    exe[$src]=$path
done < <(echo "$built" | sed -n 's/^ *Executable \(.*\) (\(.*\))$/\1 \2/p' |
         awk '{ if ($1 ~ /^tests\//) { sub(/^tests\//, "", $1); sub(/(\/main)?\.rs$/, "", $1) } else { $1 = "lib" } print $1, $NF }')
[ $lib -eq 1 ] && names=(lib "${names[@]}") && target[lib]=lib filter[lib]=""

logs=$(mktemp -d /tmp/repeat-tests.XXXXXX)
hogs=()
cleanup() { for p in "${hogs[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT
for ((i = 0; i < hog; i++)); do
    ( while :; do :; done ) &
    hogs+=($!)
done
[ "$hog" -gt 0 ] && echo "repeat-tests: $hog busy loop(s) beside the tests (pids ${hogs[*]})"
echo "repeat-tests: $runs run(s) of ${names[*]}; outputs of failed runs kept in $logs"

total_ok=0 total_bad=0
summary=()
for n in "${names[@]}"; do
    bin=${exe[${target[$n]}]:-}
    if [ -z "$bin" ]; then
        echo "repeat-tests: no executable for ${target[$n]} (is tests/${target[$n]}.rs there?)" >&2
        exit 2
    fi
    run_args=()
    [ -n "${filter[$n]}" ] && run_args=("${filter[$n]}")
    bad=0 slowest=0 began=$(date +%s)
    for ((r = 1; r <= runs; r++)); do
        out="$logs/$n.$r.log"
        start=$(date +%s)
        if "$bin" "${run_args[@]}" >"$out" 2>&1; then
            took=$(( $(date +%s) - start ))
            [ "$took" -gt "$slowest" ] && slowest=$took
            rm -f "$out"
            total_ok=$((total_ok + 1))
        else
            bad=$((bad + 1))
            total_bad=$((total_bad + 1))
            failed=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$out" | tr '\n' ' ')
            echo "FAILED $n run $r ($(( $(date +%s) - start )) s): ${failed:-see log} -> $out"
        fi
    done
    summary+=("$n: $runs runs, $bad failed ($(( $(date +%s) - began )) s in all, slowest passing run $slowest s)")
    echo "${summary[-1]}"
done
printf '%s\n' "${summary[@]}"
echo "repeat-tests: $total_ok passed, $total_bad failed"
[ "$total_bad" -eq 0 ]
