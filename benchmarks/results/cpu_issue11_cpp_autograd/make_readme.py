"""Writes README.md of this folder from its JSON files and the suite run at b21bb58 (numbers are never
typed by hand). Run from the repository root: python benchmarks/results/cpu_issue11_cpp_autograd/make_readme.py"""
import json, glob
D="benchmarks/results/cpu_issue11_cpp_autograd/"
ops=json.load(open(D+"ops_fp32.json")); bf=json.load(open(D+"ops_bf16_elementwise.json")); tr=json.load(open(D+"train_fp32.json"))
k1=json.load(open(D+"ops_bf16_k1.json"))  # run later, at 625cd6e (after the pixel_norm change)
key=lambda r:(r["op"],r["res"],r["n"],r["cin"],r["cout"],r["dtype"],r["layout"],r["mode"])
before={}
for f in sorted(glob.glob("benchmarks/results/20261203T1949Z_cpu_b21bb58db7/bench_ops_*.json")):
    for r in json.load(open(f))["rows"]: before[key(r)]=r
now=ops["rows"]+bf["rows"]+k1["rows"]
L=[]
p=ops["provenance"]
L.append("# CPU rows after the C++ autograd, the small-map bias tile and the small 1x1 GEMM rule (issue 11)\n")
L.append("Written by `make_readme.py` (this folder) from the JSON files here and those of the suite run at b21bb58.\n")
L.append(f"CPU run (no GPU), {p['cpu']['model']} ({p['cpu']['aten_capability']}, no AVX-512), {p['cpu']['logical_cores']} cores, "
         f"{p['cpu_threads']} threads, torch {p['torch']}, commit {p['git']['commit'][:10]} (main), dirty: {p['git']['dirty']}, {p['date_utc']}. "
         f"Load average at the start of the op run: {', '.join('%.2f' % v for v in p['cpu']['loadavg'])} (1/5/15 min).\n")
L.append("Commands, from the repository root, one after the other (the files were renamed as below so that `summarize.py` "
         "does not take this folder for a suite run; the committed suite run is `../20261203T1949Z_cpu_b21bb58db7/`):\n")
L.append("    python benchmarks/bench_ops.py --device cpu --dtypes fp32 --layouts nchw,channels_last --out ops_fp32.json")
L.append("    python benchmarks/bench_ops.py --device cpu --ops bias_act,pixel_norm,minibatch_stddev --dtypes bf16 --layouts nchw,channels_last --out ops_bf16_elementwise.json")
L.append("    python benchmarks/bench_train.py --device cpu --res 16,64 --precisions fp32 --out train_fp32.json\n")
kg=k1["provenance"]["git"]
L.append(f"Run afterwards, at commit {kg['commit'][:10]} (dirty: {kg['dirty']}; the commits in between changed the CUDA weight "
         f"packing, docs and the bf16 pixel_norm forward, nothing a 1x1 conv on the CPU runs), {k1['provenance']['date_utc']}, "
         "the bf16 1x1 convolutions:\n")
L.append("    python benchmarks/bench_ops.py --device cpu --ops eq_conv2d_k1 --dtypes bf16 --layouts nchw,channels_last --out ops_bf16_k1.json\n")
tg=tr["provenance"]["git"]
L.append(f"The training-step run recorded dirty: {tg['dirty']} ({', '.join(tg['changed_files'])}: the why-text of the device-code "
         "checker, committed right after; no code the benchmark runs). The .log files are the console output.\n")
nb=sum(1 for r in now if r["speedup_vs_eager"]<1); bb=sum(1 for r in now if before[key(r)]["speedup_vs_eager"]<1)
L.append(f"Ratios are eager ms / ext ms, measured interleaved call by call within one run. The `before` column is the same row "
         f"(same op, shape, dtype, layout, mode) of the suite run at b21bb58 (2026-12-03, same machine type): an earlier run, so "
         f"indicative only. Rows below 1.0x: {bb} of {len(now)} before, {nb} of {len(now)} now.\n")
def target_rows():
    out=[]
    def worst(name, target, rows):
        if not rows: return
        w=min(rows, key=lambda r:r["speedup_vs_eager"])
        wb=min(rows, key=lambda r:before[key(r)]["speedup_vs_eager"])
        out.append(f"| {name} | >= {target:.1f}x | {sum(r['speedup_vs_eager']<target for r in rows)}/{len(rows)} | "
                   f"{before[key(wb)]['speedup_vs_eager']:.2f}x ({wb['op']} {wb['res']}^2 {wb['layout']} {wb['mode']}) | "
                   f"{w['speedup_vs_eager']:.2f}x ({w['op']} {w['res']}^2 {w['layout']} {w['mode']}) |")
    worst("every op, fp32", 1.0, ops["rows"])
    worst("every op, bf16: bias_act, pixel_norm, minibatch_stddev", 1.0, bf["rows"])
    worst("every op, bf16: 1x1 convs (toRGB, fromRGB)", 1.0, k1["rows"])
    fr=ops["rows"]
    worst("upsample_conv2d fwd, 32^2..64^2", 1.8, [r for r in fr if r["op"]=="upsample_conv2d" and r["mode"]=="fwd" and r["res"] in (32,64)])
    worst("conv2d_downsample fwd, 32^2..64^2", 1.5, [r for r in fr if r["op"]=="conv2d_downsample" and r["mode"]=="fwd" and r["res"] in (32,64)])
    worst("fused convs (upsample, downsample) fwd+bwd", 1.2, [r for r in fr if r["op"] in ("upsample_conv2d","conv2d_downsample") and r["mode"]=="fwdbwd"])
    return out
L.append("## The issue's table, from this run\n")
L.append("The cases of the table in issue 11 (fp32, NCHW, 2 threads); the issue's own numbers were measured before any of the CPU work.\n")
L.append("| case (N x C x H x W) | ext ms | eager ms | x eager | in the issue |")
L.append("|---|---|---|---|---|")
def find(op, res, mode):
    return next(r for r in ops["rows"] if r["op"]==op and r["res"]==res and r["mode"]==mode and r["layout"]=="nchw")
issue = [("bias_act fwd, 64x64x16x16", "bias_act", 16, "fwd", "0.05x"),
         ("bias_act fwd, 16x64x64x64", "bias_act", 64, "fwd", "0.08x"),
         ("fromRGB 1x1 conv fwd, 64x3x16x16 -> 64", "eq_conv2d_k1_fromrgb", 16, "fwd", "0.10x"),
         ("eq_conv2d 3x3 + pixel norm fwd+bwd, 16x64x64x64", "eq_conv2d_k3", 64, "fwdbwd", "0.43x"),
         ("upsample_conv2d + pixel norm fwd, 16x64x32x32 -> 64^2", "upsample_conv2d", 64, "fwd", "0.55x"),
         ("minibatch_stddev fwd+bwd, 64x64x16x16", "minibatch_stddev", 16, "fwdbwd", "0.53x"),
         ("conv2d_downsample fwd, 16x64x64x64", "conv2d_downsample", 64, "fwd", "1.39x")]
for label, op, res, mode, was in issue:
    r = find(op, res, mode); c = r["contenders"]
    L.append(f"| {label} | {c['ext']['ms']:.3g} | {c['eager']['ms']:.3g} | {r['speedup_vs_eager']:.2f}x | {was} |")
ref_ = {r["res"]: r for r in tr["rows"] if r["variant"] == "reference"}
for r in tr["rows"]:
    if r["variant"] == "ext":
        L.append(f"| one training step (`bench_train --device cpu`), {r['res']}^2, batch 16 | {r['ms']:.0f} | "
                 f"{ref_[r['res']]['ms']:.0f} (reference) | {r['speedup_vs_reference']:.2f}x | {'0.58x' if r['res']==16 else '0.73x'} |")
L.append("")
L.append("## Issue 11 targets (fp32 unless noted)\n")
L.append("| case | target | rows below target now | worst before (b21bb58) | worst now |")
L.append("|---|---|---|---|---|")
L+=target_rows()
L.append("")
L.append("Training step (`bench_train --device cpu`, batch 16, fp32, NCHW), ext img/s over reference img/s in this run "
         "(target >= 1.3x); the suite run at b21bb58 measured 1.11x at 16^2 and 1.44x at 64^2:\n")
ref={r["res"]:r for r in tr["rows"] if r["variant"]=="reference"}
for r in tr["rows"]:
    if r["variant"]=="ext":
        L.append(f"- {r['res']}^2: {r['speedup_vs_reference']:.2f}x ({ref[r['res']]['ms']:.0f} ms reference, {r['ms']:.0f} ms ext per step)")
L.append("")
L.append("## Rows still below 1.0x\n")
L.append("| op | res | N x Cin>Cout | dtype | layout | mode | ext ms | eager ms | x eager | before |")
L.append("|---|---|---|---|---|---|---|---|---|---|")
for r in now:
    if r["speedup_vs_eager"]<1:
        c=r["contenders"]
        L.append(f"| {r['op']} | {r['res']}^2 | {r['n']}x{r['cin']}>{r['cout']} | {r['dtype']} | {r['layout']} | {r['mode']} | "
                 f"{c['ext']['ms']:.3g} | {c['eager']['ms']:.3g} | {r['speedup_vs_eager']:.2f}x | {before[key(r)]['speedup_vs_eager']:.2f}x |")
L.append("")
L.append("## Every row\n")
L.append("| op | res | N x Cin>Cout | dtype | layout | mode | x eager before | x eager now |")
L.append("|---|---|---|---|---|---|---|---|")
for r in now:
    L.append(f"| {r['op']} | {r['res']}^2 | {r['n']}x{r['cin']}>{r['cout']} | {r['dtype']} | {r['layout']} | {r['mode']} | "
             f"{before[key(r)]['speedup_vs_eager']:.2f}x | {r['speedup_vs_eager']:.2f}x |")
L.append("")
L.append("## After this run\n")
L.append("Commit 625cd6e (after this run) changed the bf16/fp16 channels_last pixel_norm forward, the rows at "
         "0.83-0.84x above: single-thread 1.06-1.09 -> 0.80-0.91 ms, and a `bench_ops --ops pixel_norm` run "
         "afterwards (not committed) measured 1.09x / 1.11x at 16^2 / 32^2 (benchmarks/NOTES.md).")
open(D+"README.md","w").write("\n".join(L)+"\n")
