#!/usr/bin/env bash
# Instructions per training step, callgrind, before/after run side by side per variant.
set -u
. /work/venvs/compile/bin/activate
export TORCHINDUCTOR_CPP_MARCH=x86-64-v3 ATEN_CPU_CAPABILITY=avx2  # valgrind has no AVX-512
OUT=/tmp/compile_work/cg
mkdir -p $OUT
N=10
for vp in "ext-compiled fp32" "ext-compiled bf16" "reference-compiled fp32" "ext fp32"; do
  set -- $vp
  for tree in before after; do
    dir=/tmp/compile_work/$([ $tree = before ] && echo base || echo after)
    (cd $dir && valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUT/cg.$tree.$1.$2.%p \
       python /tmp/compile_work/cg_bench.py $1 $2 $N > $OUT/log.$tree.$1.$2 2>&1) &
  done
  wait
  echo "$vp done $(date +%T)"
done
