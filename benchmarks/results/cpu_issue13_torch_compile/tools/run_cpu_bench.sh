#!/usr/bin/env bash
set -u
. /work/venvs/compile/bin/activate
OUT=/tmp/compile_work/cpubench.jsonl
: > $OUT
for rep in 1 2 3 4 5; do
  for tree in before after; do
    for vp in "ext-compiled fp32" "ext-compiled bf16" "reference-compiled fp32" "reference-compiled bf16" "ext fp32"; do
      line=$(cd /tmp/compile_work/$([ $tree = before ] && echo base || echo after) && python /tmp/compile_work/cpu_time_bench.py $vp 60 2>/dev/null | tail -1)
      echo "{\"tree\": \"$tree\", \"rep\": $rep, \"load\": \"$(cut -d' ' -f1 /proc/loadavg)\", \"r\": $line}" | tee -a $OUT
    done
  done
done
