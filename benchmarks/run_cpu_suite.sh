#!/usr/bin/env bash
# The CPU benchmark run behind issue 11's table (no GPU needed):
#
#   bash benchmarks/run_cpu_suite.sh [OUTDIR]
#
# From the repository root (any cwd works), with the extension built (pip install, or an in-place
# build of this checkout): bench_ops --device cpu at 64 channels (4^2..64^2, batch 64 up to 16^2 and
# 16 above) and again at 128..16 channels (--fmap-base 512 --fmap-max 128), both in fp32 and bf16,
# NCHW and channels_last, forward and forward+backward, ext vs eager timed interleaved; then
# bench_train --device cpu (16^2 and 64^2, batch 16, fp32 and bf16, ext vs reference, interleaved).
# Writes everything to OUTDIR (default benchmarks/results/<UTC date>_cpu_<short sha>/) with
# stages.tsv and provenance.json (machine load included), then regenerates
# benchmarks/results/SUMMARY.md. Takes 20-40 minutes on 2 cores; run it when the machine is quiet.
#
# Environment knobs (all optional):
#   PYTHON            python to use (default python3)
#   CPU_THREADS       torch intra-op threads (default: torch's default, one per core)
#   SUITE_SKIP        comma list of stages to skip (ops_c64, ops_c16_128, train)
#   SUITE_QUICK=1     rehearsal: --quick benchmarks (seconds)
#   SUITE_GIT_COMMIT, SUITE_GIT_DIRTY   the commit and dirty flag when the tree has no .git (a copy)

set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
PY=${PYTHON:-python3}
QUICK=${SUITE_QUICK:-0}
SKIP=",${SUITE_SKIP:-},"
STARTED_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)
SUITE_CMD="bash benchmarks/run_cpu_suite.sh $*"
export PYTHONUNBUFFERED=1

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
OUTDIR=${1:-benchmarks/results/$(date -u +%Y%m%dT%H%MZ)_cpu_${SHORT:0:10}}
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
STAGES=$OUTDIR/stages.tsv
printf '# stage\tstatus\texit_code\tseconds\ttime_limit_s\tlog\tcommand\n' > "$STAGES"
FAILED=0
COMMON=(--device cpu)
[ -n "${CPU_THREADS:-}" ] && COMMON+=(--threads "$CPU_THREADS")
[ "$QUICK" = 1 ] && COMMON+=(--quick)

echo "== progan_ext CPU suite: $STARTED_UTC, commit ${SUITE_GIT_COMMIT:-unknown} (dirty=${SUITE_GIT_DIRTY:-?})"
echo "== output: $OUTDIR; load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

run_stage() {  # NAME CMD...
    local name=$1
    shift
    local cmdline
    cmdline=$(printf '%q ' "$@")
    if [[ "$SKIP" == *",$name,"* ]]; then
        echo "== [$name] skipped (SUITE_SKIP)"
        printf '%s\t%s\t\t0\t\t\t%s\n' "$name" "skipped (SUITE_SKIP)" "$cmdline" >> "$STAGES"
        return 0
    fi
    local log="$OUTDIR/$name.log" t0=$SECONDS
    echo "== [$name] $cmdline"
    echo "\$ $cmdline" > "$log"
    "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]} status=pass
    (( rc == 0 )) || { status=fail; FAILED=1; }
    echo "== [$name] $status (exit $rc) in $(( SECONDS - t0 ))s"
    printf '%s\t%s\t%s\t%s\t\t%s\t%s\n' "$name" "$status" "$rc" "$(( SECONDS - t0 ))" "$(basename "$log")" \
        "$cmdline" >> "$STAGES"
}

run_stage ops_c64 "$PY" benchmarks/bench_ops.py "${COMMON[@]}" --out "$OUTDIR/bench_ops_cpu_c64.json"
run_stage ops_c16_128 "$PY" benchmarks/bench_ops.py "${COMMON[@]}" --fmap-base 512 --fmap-max 128 \
    --out "$OUTDIR/bench_ops_cpu_c16-128.json"
run_stage train "$PY" benchmarks/bench_train.py "${COMMON[@]}" --precisions fp32,bf16 \
    --out "$OUTDIR/bench_train_cpu.json"

"$PY" benchmarks/provenance.py provenance --stages "$STAGES" --out "$OUTDIR/provenance.json" \
    --extra "suite_command=$SUITE_CMD" --extra "suite_started_utc=$STARTED_UTC" --extra "suite_quick=$QUICK" \
    || echo "== provenance.json could not be written"
"$PY" benchmarks/summarize.py --print-run "$OUTDIR"
exit $FAILED
