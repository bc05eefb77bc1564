#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder that reads network or file input (fuzz/, libFuzzer).
#
#   scripts/fuzz.sh --short [SECONDS]   each target for SECONDS (default 5): what .ci/run does
#   scripts/fuzz.sh --long [EXECS]      each target for EXECS executions (default 10 000 000),
#                                       two at a time; the figures go to fuzz/RESULTS.jsonl
#   scripts/fuzz.sh --seeds             rewrites the seed corpora (fuzz/corpus/) from the encoders
#   ... [TARGET...]                     only these targets
#
# Builds with the stable compiler: libFuzzer's coverage instrumentation (sancov) is a stable
# rustc option; cargo-fuzz is not needed. `FUZZ_ASAN=1` adds AddressSanitizer (nightly only).
# Each run prints one JSON line per target: executions, speed, new coverage units, peak memory,
# crashes and timeouts. Inputs that the fuzzer finds go to fuzz/corpus-grown/ (not committed);
# a crash or timeout leaves its input in fuzz/artifacts/TARGET/ and fails the script (once
# fixed, keep the input in fuzz/regressions/TARGET/ and write a test of it).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=short
limit=""
case "${1:-}" in
    --short) mode=short; shift; [[ ${1:-} =~ ^[0-9]+$ ]] && { limit=$1; shift; } ;;
    --long) mode=long; shift; [[ ${1:-} =~ ^[0-9]+$ ]] && { limit=$1; shift; } ;;
    --seeds) mode=seeds; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
esac
[[ $mode == short ]] && limit=${limit:-5}
[[ $mode == long ]] && limit=${limit:-10000000}

if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

all=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v -e '^kioskd-fuzz$' -e '^make_seeds$')
targets=${*:-$all}
for t in $targets; do
    grep -qx "$t" <<<"$all" || { echo "fuzz.sh: no target \`$t\` (targets: $(echo $all))" >&2; exit 2; }
done

triple=$(rustc -vV | sed -n 's/^host: //p')
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
toolchain=()
if [[ ${FUZZ_ASAN:-0} == 1 ]]; then
    flags+=" -Zsanitizer=address"
    toolchain=(+nightly)
fi
# The short runs build quicker (profile `ci`, opt-level 1); the long ones run faster (release).
profile=${FUZZ_PROFILE:-$([[ $mode == short ]] && echo ci || echo release)}
# --target keeps the instrumentation off build scripts and proc macros.
echo "fuzz.sh: building the fuzz targets (profile $profile, libFuzzer coverage${FUZZ_ASAN:+, AddressSanitizer})" >&2
RUSTFLAGS="$flags" cargo "${toolchain[@]}" build --quiet --profile "$profile" --manifest-path fuzz/Cargo.toml \
    --target "$triple" --bins
bin=fuzz/target/$triple/$profile

if [[ $mode == seeds ]]; then
    rm -rf fuzz/corpus
    "$bin/make_seeds" fuzz/corpus
    echo "fuzz.sh: seeds written: $(find fuzz/corpus -type f | wc -l) files in fuzz/corpus/" >&2
    exit 0
fi

# One target: prints its JSON line; fails on a crash or a timeout.
one() {
    local t=$1 log stats rc
    mkdir -p "fuzz/corpus-grown/$t" "fuzz/artifacts/$t"
    log=$(mktemp)
    local budget=(-max_total_time="$limit")
    [[ $mode == long ]] && budget=(-runs="$limit")
    rc=0
    local t0 t1
    t0=$(date +%s.%N)
    # The committed seeds and the inputs of crashes found before (fuzz/regressions/, each
    # also a test of the project's) are read, never written: new inputs go to corpus-grown.
    local inputs=("fuzz/corpus-grown/$t" "fuzz/corpus/$t")
    [[ -d fuzz/regressions/$t ]] && inputs+=("fuzz/regressions/$t")
    "$bin/$t" "${inputs[@]}" "${budget[@]}" -print_final_stats=1 \
        -timeout=10 -rss_limit_mb=2048 -artifact_prefix="fuzz/artifacts/$t/" \
        >"$log" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
    local crashes timeouts
    crashes=$(find "fuzz/artifacts/$t" -name 'crash-*' -o -name 'leak-*' -o -name 'oom-*' | wc -l)
    timeouts=$(find "fuzz/artifacts/$t" -name 'timeout-*' -o -name 'slow-unit-*' | wc -l)
    printf '{"target":"%s","execs":%s,"execs_per_s":%s,"seconds":%s,"new_units":%s,"corpus":%s,"peak_rss_mb":%s,"crashes":%s,"timeouts":%s,"exit":%s}\n' \
        "$t" "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" \
        "$(stat new_units_added)" "$(find "fuzz/corpus/$t" "fuzz/corpus-grown/$t" -type f | wc -l)" \
        "$(stat peak_rss_mb)" "$crashes" "$timeouts" "$rc" | sed 's/:,/:null,/g'
    if ((rc != 0 || crashes > 0 || timeouts > 0)); then
        echo "fuzz.sh: \`$t\` failed (exit $rc); its log:" >&2
        tail -n 40 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}
export -f one
export bin mode limit

results=$(mktemp)
trap 'rm -f "$results"' EXIT
failed=0
if [[ $mode == long ]]; then
    # Two at a time (two cores); each line is printed as its target ends.
    printf '%s\n' $targets | xargs -P 2 -I{} bash -c 'one "$@"' _ {} | tee "$results" || failed=1
    {
        printf '{"run":"%s","execs_per_target":%s,"commit":"%s"}\n' "$(date -u +%FT%TZ)" "$limit" \
            "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
        cat "$results"
    } >>fuzz/RESULTS.jsonl
else
    for t in $targets; do
        one "$t" | tee -a "$results" || failed=1
    done
fi
n=$(wc -l <"$results")
if ((failed)); then
    echo "fuzz.sh: FAILED — see the inputs in fuzz/artifacts/ (replay: $bin/TARGET INPUT)" >&2
    exit 1
fi
echo "fuzz.sh: $n targets, no crash, no timeout ($mode: $limit $([[ $mode == long ]] && echo executions || echo seconds) each)" >&2
