#!/usr/bin/env bash
set -u
while pgrep -f run_cg.sh > /dev/null; do sleep 20; done
. /work/venvs/compile/bin/activate
export TORCHINDUCTOR_CPP_MARCH=x86-64-v3 ATEN_CPU_CAPABILITY=avx2
OUT=/tmp/compile_work/cg2
mkdir -p $OUT
for vp in "ext-compiled fp32" "ext-compiled bf16"; do
  set -- $vp
  for tree in before after; do
    dir=/tmp/compile_work/$([ $tree = before ] && echo base || echo after)
    (cd $dir && valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUT/cg.$tree.$1.$2.%p \
       python /tmp/compile_work/cg_gstep.py $1 $2 20 > $OUT/log.$tree.$1.$2 2>&1) &
  done
  wait
  echo "$vp done $(date +%T)"
done
