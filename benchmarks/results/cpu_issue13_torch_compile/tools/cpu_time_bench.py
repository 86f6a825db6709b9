"""Per-step wall and CPU time of bench_train's TrainStep (run from a tree's root: uses its code).
CPU time (time.process_time) leaves out the time the process waits for a core on a loaded machine."""
import json, statistics, sys, time, warnings
sys.path.insert(0, "benchmarks")
import bench_train, common, torch
warnings.filterwarnings("ignore")
variant, precision, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
args = bench_train.parse_args(["--quick"])
device = torch.device("cpu")
common.apply_threads(args.threads, device, args.quick)
ts = bench_train.TrainStep(bench_train.import_trainer(), variant, precision, 8, args, device)
for k in range(4):
    ts.step(k % len(ts.reals))
wall, cpu = [], []
for k in range(n):
    w0, c0 = time.perf_counter(), time.process_time()
    ts.step(k % len(ts.reals))
    wall.append(time.perf_counter() - w0); cpu.append(time.process_time() - c0)
b = ts.batch
out = {"variant": variant, "precision": precision, "steps": n, "threads": torch.get_num_threads(),
       "wall_ms_median": 1e3 * statistics.median(wall), "cpu_ms_median": 1e3 * statistics.median(cpu),
       "img_per_s_wall": b / statistics.median(wall), "img_per_s_cpu": b / statistics.median(cpu)}
print(json.dumps(out))
