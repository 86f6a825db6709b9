"""Instructions of the compiled part alone: the G step's forward (compiled G, compiled D) and its
backward, as TrainStep builds them; callgrind instrumentation only around the measured steps."""
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
ts.D.requires_grad_(False)

def g_step():
    z = torch.randn(ts.batch, ts.latent_size)
    with ts._ctx():
        loss = ts.g_loss(ts.D_gloss, ts.G_run(z, resolution=8, alpha=1.0), resolution=8, alpha=1.0)
    ts.opt_g.zero_grad(set_to_none=True)
    bench_train._scalar(loss).backward()

for _ in range(4):
    g_step()
cg.cg_start()
for _ in range(n):
    g_step()
cg.cg_stop()
print("done", variant, precision, n)
