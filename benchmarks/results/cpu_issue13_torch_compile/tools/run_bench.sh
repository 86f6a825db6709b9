#!/usr/bin/env bash
# Before/after CPU bench_train of the compiled variants, interleaved: before = b113553 (archive + the
# same built _C), after = the compile branch. Same command, same venv, same machine.
set -u
. /work/venvs/compile/bin/activate
OUT=/tmp/compile_work/bench
mkdir -p $OUT
ARGS="--quick --variants reference-compiled,ext-compiled --precisions fp32,bf16 --steps 30 --warmup-steps 3"
for rep in 1 2 3; do
  for tree in before after; do
    if [ $tree = before ]; then dir=/tmp/compile_work/base; env="SUITE_GIT_COMMIT=b113553e475d80724bb7094d257b3a9a36557166 SUITE_GIT_DIRTY=0"
    else dir=/tmp/compile_work/after; env="SUITE_GIT_COMMIT=122d6ff364bd9cbd3bf4ae682053d172b1539605 SUITE_GIT_DIRTY=0"; fi
    echo "=== rep $rep $tree $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
    (cd $dir && env $env python benchmarks/bench_train.py $ARGS --out $OUT/${tree}_rep${rep}.json 2>&1 | grep -v "^W1\|DEBUG")
  done
done
