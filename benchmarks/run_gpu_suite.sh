#!/usr/bin/env bash
# The one command for a GPU machine without network access (e.g. the H100 device machine):
#
#   bash benchmarks/run_gpu_suite.sh [OUTDIR]
#
# From the repository root (any cwd works): builds the extension in place, runs the CUDA tests,
# compute-sanitizer memcheck and racecheck over benchmarks/sanitizer_smoke.py, bench_ops (three passes)
# and bench_train, then writes provenance.json and regenerates benchmarks/results/SUMMARY.md.
# Everything goes to OUTDIR (default benchmarks/results/<UTC date>_<gpu>_<short sha>/).
#
# Fits one 10-minute command: every stage runs under `timeout`, with a limit that is the smaller of its
# own cap and what the overall budget (SUITE_BUDGET_S, default 570 s) leaves after reserving the minimum
# of the stages still to come. A failing or timed-out stage is recorded and the suite goes on; the exit
# status is 0 only when every stage that ran passed. The last thing printed is a short summary table.
#
# Environment knobs (all optional):
#   PYTHON                python to use (default python3)
#   TORCH_CUDA_ARCH_LIST  build arch list (default 9.0);  MAX_JOBS  parallel build jobs (default 16)
#   SUITE_BUDGET_S        overall seconds (default 570)
#   SUITE_SKIP            comma list of stages to skip (build,tests,crash_bt,memcheck,racecheck,ops_bf16,
#                         train,ops_compile,ops_fp32_fp16,ops_autotune)
#   SUITE_TEST_WORKERS    pytest-xdist processes for the tests stage when xdist is installed (default 8)
#   SUITE_QUICK=1         CPU rehearsal: no build, no tests, benchmarks with --quick (used by the CPU tests)
#   SUITE_GIT_COMMIT, SUITE_GIT_DIRTY   the commit and dirty flag when the tree has no .git (a copy)
#   SANITIZER_CMD         the python command line run under compute-sanitizer memcheck
#                         (default: "$PYTHON benchmarks/sanitizer_smoke.py")
#   RACECHECK_CMD         the one run under racecheck (default: the same with --dtypes fp32,bf16)

set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$(pwd)
PY=${PYTHON:-python3}
BUDGET=${SUITE_BUDGET_S:-570}
QUICK=${SUITE_QUICK:-0}
SKIP=",${SUITE_SKIP:-},"
START=$(date +%s)
STARTED_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)
SUITE_CMD="bash benchmarks/run_gpu_suite.sh $*"
export PYTHONUNBUFFERED=1

# Git state before anything is written (results do not make the tree dirty; a copy without .git
# passes SUITE_GIT_COMMIT / SUITE_GIT_DIRTY).
if [ -z "${SUITE_GIT_COMMIT:-}" ] && commit=$(git rev-parse HEAD 2>/dev/null); then
    export SUITE_GIT_COMMIT=$commit
    if [ -z "${SUITE_GIT_DIRTY:-}" ]; then
        if git status --porcelain 2>/dev/null | grep -v 'benchmarks/results/' | grep -q .; then
            export SUITE_GIT_DIRTY=1
        else
            export SUITE_GIT_DIRTY=0
        fi
    fi
fi
SHORT=${SUITE_GIT_COMMIT:-nogit}
SHORT=${SHORT:0:10}
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 | tr 'A-Z ' 'a-z_' | tr -cd 'a-z0-9_-')
OUTDIR=${1:-benchmarks/results/$(date -u +%Y%m%dT%H%MZ)_${GPU:-nogpu}_${SHORT}}
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
STAGES=$OUTDIR/stages.tsv
printf '# stage\tstatus\texit_code\tseconds\ttime_limit_s\tlog\tcommand\n' > "$STAGES"
FAILED=0

echo "== progan_ext GPU suite: $STARTED_UTC, commit ${SUITE_GIT_COMMIT:-unknown} (dirty=${SUITE_GIT_DIRTY:-?}), gpu ${GPU:-none}"
echo "== output: $OUTDIR; budget ${BUDGET}s"

record() {  # name status rc seconds limit log command
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$STAGES"
}

# run_stage NAME CAP_S RESERVE_S CMD...: runs CMD under timeout; '@BUDGET@' in CMD becomes the stage's
# limit minus 20 s (the benchmarks stop starting rows then and write their JSON).
run_stage() {
    local name=$1 cap=$2 reserve=$3
    shift 3
    local cmdline
    cmdline=$(printf '%q ' "$@")
    if [[ "$SKIP" == *",$name,"* ]]; then
        echo "== [$name] skipped (SUITE_SKIP)"
        record "$name" "skipped (SUITE_SKIP)" "" 0 "" "" "$cmdline"
        return 0
    fi
    local now left limit
    now=$(date +%s)
    left=$(( START + BUDGET - now - reserve ))
    limit=$(( cap < left ? cap : left ))
    if (( limit < 20 )); then
        echo "== [$name] skipped: out of time (${limit}s left for it)"
        record "$name" "skipped: out of time" "" 0 "$limit" "" "$cmdline"
        return 0
    fi
    local args=() a
    for a in "$@"; do args+=("${a//@BUDGET@/$(( limit - 20 ))}"); done
    cmdline=$(printf '%q ' "${args[@]}")
    local log="$OUTDIR/$name.log"
    echo "== [$name] limit ${limit}s: $cmdline"
    local t0=$SECONDS
    echo "\$ $cmdline" > "$log"
    timeout -k 10 "$limit" "${args[@]}" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    local secs=$(( SECONDS - t0 ))
    local status=pass
    if (( rc == 124 || rc == 137 )); then status=timeout
    elif [ "$name" = tests ] && (( rc == 5 )); then status="fail: no tests selected"
    elif (( rc != 0 )); then status=fail; fi
    [ "$status" = pass ] || FAILED=1
    echo "== [$name] $status (exit $rc) in ${secs}s"
    record "$name" "$status" "$rc" "$secs" "$limit" "$(basename "$log")" "$cmdline"
}

skip_stage() {  # name reason
    echo "== [$1] skipped: $2"
    record "$1" "skipped: $2" "" 0 "" "" ""
}

write_provenance() {
    timeout -k 5 60 "$PY" benchmarks/provenance.py provenance --stages "$STAGES" --out "$OUTDIR/provenance.json" \
        --extra "suite_command=$SUITE_CMD" --extra "suite_started_utc=$STARTED_UTC" \
        --extra "suite_budget_s=$BUDGET" --extra "suite_quick=$QUICK" > "$OUTDIR/provenance.log" 2>&1 \
        || echo "== provenance.json could not be written (see provenance.log)"
}

# ---- environment -----------------------------------------------------------------------------
{
    echo "\$ nvidia-smi"; nvidia-smi 2>&1 || true
    echo "\$ nvcc --version"; nvcc --version 2>&1 || true
    echo "\$ compute-sanitizer --version"; compute-sanitizer --version 2>&1 || true
    echo "\$ $PY -c 'import torch; ...'"
    "$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" 2>&1 || true
} > "$OUTDIR/environment.log"
write_provenance  # a first copy, in case the whole command is killed; rewritten at the end

HAVE_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
QFLAG=()
[ "$QUICK" = 1 ] && QFLAG=(--quick)

# ---- build, tests, sanitizers ------------------------------------------------------------------
# Reserves: the minimum later stages need (tests 30, sanitizers 20+20, ops_bf16 40, train 40, final 15).
if [ "$QUICK" = 1 ]; then
    skip_stage build "SUITE_QUICK"
elif [ ! -f setup.py ]; then
    skip_stage build "no setup.py in this checkout"; FAILED=1
else
    # FORCE_CUDA: a toolkit that is not found fails the stage instead of building the CPU-only extension
    run_stage build 240 165 env TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
        PROGAN_EXT_FORCE_CUDA=1 "$PY" setup.py build_ext --inplace
fi
"$PY" -c "import json, warnings; warnings.simplefilter('ignore'); import progan_ext; print(json.dumps(progan_ext.ops.backend_info(), indent=1))" \
    > "$OUTDIR/backend_info.json" 2> "$OUTDIR/backend_info.log" || echo "== progan_ext does not import (see backend_info.log)"
echo "== backend: $(tr -d '\n' < "$OUTDIR/backend_info.json" | cut -c1-300)"

if [ "$QUICK" = 1 ]; then
    skip_stage tests "SUITE_QUICK"
elif [ ! -d tests ]; then
    skip_stage tests "no tests/ folder"
else
    # REQUIRE_EXT: an extension that does not load fails the tests instead of falling back to the
    # reference ops (which would pass them). pytest-xdist, where installed, spreads the cases over
    # processes (each with its own CUDA context); --junitxml keeps every case's outcome and time.
    # Besides the CUDA cases, the C++ CPU kernels' argument errors: on the first GPU machine two CUDA
    # ops' ValueErrors segfaulted, and whether the CPU kernels' do too there tells where to look.
    XDIST=()
    "$PY" -c "import xdist" > /dev/null 2>&1 && XDIST=(-n "${SUITE_TEST_WORKERS:-8}")
    TESTS_K="cuda or direct_op_call_validates or bad_inputs_compiled or bad_building_block_args"
    run_stage tests 150 135 env PROGAN_EXT_REQUIRE_EXT=1 "$PY" -m pytest tests -k "$TESTS_K" -q -rfE -p no:cacheprovider \
        "${XDIST[@]}" --durations 15 --junitxml "$OUTDIR/tests_junit.xml"
fi

# A test that killed its pytest-xdist worker (a segfault, an abort) leaves only Python's traceback:
# the first two such tests run again alone under cuda-gdb (or gdb) for the native backtrace.
CRASHED=()
if [ -f "$OUTDIR/tests.log" ]; then
    mapfile -t CRASHED < <(grep -o "crashed while running '[^']*'" "$OUTDIR/tests.log" | cut -d"'" -f2 | head -n 2)
fi
DEBUGGER=$(command -v cuda-gdb || command -v gdb || true)
if (( ${#CRASHED[@]} == 0 )); then
    skip_stage crash_bt "no test crashed its worker"
elif [ -z "$DEBUGGER" ]; then
    skip_stage crash_bt "no cuda-gdb or gdb for the crashed tests (${CRASHED[*]})"
else
    run_stage crash_bt 90 115 env PROGAN_EXT_REQUIRE_EXT=1 "$DEBUGGER" -q -batch -ex run -ex bt \
        --args "$PY" -X faulthandler -m pytest -q -p no:cacheprovider "${CRASHED[@]}"
fi

read -r -a SAN_CMD <<< "${SANITIZER_CMD:-$PY benchmarks/sanitizer_smoke.py}"
# racecheck is several times slower than memcheck (the first H200 run: memcheck 20 s, racecheck past
# its 75 s): fp32 and bf16 only, whose kernels are fp16's too (the same 16-bit instantiations)
read -r -a RACE_CMD <<< "${RACECHECK_CMD:-$PY benchmarks/sanitizer_smoke.py --dtypes fp32,bf16}"
if ! command -v compute-sanitizer > /dev/null 2>&1; then
    skip_stage memcheck "compute-sanitizer not found"; skip_stage racecheck "compute-sanitizer not found"
elif [ "$HAVE_CUDA" != 1 ]; then
    skip_stage memcheck "no CUDA device"; skip_stage racecheck "no CUDA device"
else
    run_stage memcheck 75 115 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 PROGAN_EXT_REQUIRE_EXT=1 compute-sanitizer --tool memcheck \
        --error-exitcode 99 --print-limit 30 "${SAN_CMD[@]}"
    run_stage racecheck 100 95 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 PROGAN_EXT_REQUIRE_EXT=1 compute-sanitizer --tool racecheck \
        --error-exitcode 99 --print-limit 30 "${RACE_CMD[@]}"
fi

# ---- benchmarks, most important first ------------------------------------------------------------
# Shorter warm-up and timing windows than the defaults (10 + 40 ms of calls, at least 10 timed calls) so
# that the tables fit; the ops come in the order of issue 6's targets.
OPS_ORDER=upsample_conv2d,conv2d_downsample,pixel_norm,minibatch_stddev,eq_conv2d_k3,bias_act,eq_conv2d_k1
TIMING=(--warmup-ms 10 --rep-ms 40 --min-reps 10)
[ "$QUICK" = 1 ] && TIMING=()
# 1. every op and shape, bf16, both layouts, ext vs eager.
run_stage ops_bf16 110 55 "$PY" benchmarks/bench_ops.py "${QFLAG[@]}" --ops "$OPS_ORDER" --dtypes bf16 \
    --layouts nchw,channels_last --contenders ext,eager "${TIMING[@]}" --out "$OUTDIR/bench_ops_bf16.json" \
    --time-budget-s @BUDGET@
# 2. training step at 256 and 1024 (compiled variants only if time is left): the product's headline, so
#    before the compile comparisons of the ops, which spend most of their time compiling.
if [ "$QUICK" = 1 ]; then
    run_stage train 60 15 "$PY" benchmarks/bench_train.py --quick --out "$OUTDIR/bench_train.json" \
        --time-budget-s @BUDGET@
else
    run_stage train 150 15 "$PY" benchmarks/bench_train.py --res 256,1024 --precisions bf16,fp32 \
        --out "$OUTDIR/bench_train.json" --time-budget-s @BUDGET@
fi
# 3. the fused resampling convs at the big maps against torch.compile too (issue 6's compile targets).
if [ "$QUICK" = 1 ]; then
    skip_stage ops_compile "SUITE_QUICK (compiling on a CPU takes minutes)"
else
    run_stage ops_compile 100 15 "$PY" benchmarks/bench_ops.py --ops upsample_conv2d,conv2d_downsample \
        --res 256-1024 --dtypes bf16 --layouts nchw --contenders all "${TIMING[@]}" --out "$OUTDIR/bench_ops_compile.json" \
        --time-budget-s @BUDGET@
fi
# 4. fp32 and fp16, NCHW, ext vs eager, with whatever time is left.
run_stage ops_fp32_fp16 100 15 "$PY" benchmarks/bench_ops.py "${QFLAG[@]}" --ops "$OPS_ORDER" --dtypes fp32,fp16 \
    --layouts nchw --contenders ext,eager "${TIMING[@]}" --out "$OUTDIR/bench_ops_fp32_fp16.json" --time-budget-s @BUDGET@

# 5. which candidate the autotuned dispatch picks on this GPU (bf16 forward, both layouts).
run_stage ops_autotune 100 10 "$PY" benchmarks/bench_ops.py "${QFLAG[@]}" --ops "$OPS_ORDER" --dtypes bf16 \
    --layouts nchw,channels_last --modes fwd --contenders ext,eager --autotune on "${TIMING[@]}" \
    --out "$OUTDIR/bench_ops_autotune.json" --time-budget-s @BUDGET@

# ---- provenance, summary ----------------------------------------------------------------------
write_provenance
echo "== total $(( $(date +%s) - START ))s"
if [ "$(dirname "$OUTDIR")" = "$ROOT/benchmarks/results" ]; then
    SUMMARY_ARGS=()  # regenerate benchmarks/results/SUMMARY.md over every run folder there
else
    SUMMARY_ARGS=(--runs "$OUTDIR" --out "$OUTDIR/SUMMARY.md")  # a run kept elsewhere: its own summary
fi
timeout -k 5 60 "$PY" benchmarks/summarize.py "${SUMMARY_ARGS[@]}" --print-run "$OUTDIR" \
    || { echo "== summarize.py failed"; FAILED=1; }
exit $FAILED
