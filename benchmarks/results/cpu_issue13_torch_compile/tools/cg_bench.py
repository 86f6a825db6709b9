"""Instructions per training step (callgrind, instrumentation on only around the timed steps)."""
import ctypes, sys, warnings
sys.path.insert(0, "benchmarks")
import bench_train, common, torch
warnings.filterwarnings("ignore")
variant, precision, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cg = ctypes.CDLL("/tmp/compile_work/libcgctl.so")
args = bench_train.parse_args(["--quick"])
device = torch.device("cpu")
common.apply_threads(args.threads, device, args.quick)
ts = bench_train.TrainStep(bench_train.import_trainer(), variant, precision, 8, args, device)
for k in range(4):
    ts.step(k % len(ts.reals))
cg.cg_start()
for k in range(n):
    ts.step(k % len(ts.reals))
cg.cg_stop()
print("done", variant, precision, n, ts.batch)
