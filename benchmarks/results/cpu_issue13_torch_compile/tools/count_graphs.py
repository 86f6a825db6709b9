"""Graph and break counts of torch._dynamo.explain for G and D (impl ext/reference), every resolution."""
import sys, warnings, torch
warnings.filterwarnings("ignore")
from progan_ext.networks import Generator, Discriminator
from progan_ext import ops
def cold():
    # the state of a fresh process (old ops.py cached its kernel look-ups after the first call)
    if hasattr(ops, '_has_kernel_cache'): ops._has_kernel_cache.clear()
    torch._dynamo.reset()
WARM = '--warm' in sys.argv
R = int(sys.argv[1])
for impl in ("ext", "reference"):
    torch.manual_seed(0)
    G = Generator(R, latent_size=16, fmap_max=16, impl=impl)
    D = Discriminator(R, fmap_max=16, impl=impl)
    for prec in ("fp32", "bf16"):
        for r in G.resolutions:
            for a in ((1.0, 0.5) if r > 4 else (1.0,)):
                z = torch.randn(4, 16)
                img = torch.randn(4, 3, r, r)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                    (torch._dynamo.reset() if WARM else cold())
                    eg = torch._dynamo.explain(G)(z, resolution=r, alpha=a)
                    (torch._dynamo.reset() if WARM else cold())
                    ed = torch._dynamo.explain(D)(img, resolution=r, alpha=a)
                print(f"{impl:9s} {prec} r={r:3d} alpha={a}: G {eg.graph_count} graphs / {eg.graph_break_count} breaks;"
                      f" D {ed.graph_count} graphs / {ed.graph_break_count} breaks", flush=True)
                if r == R and a == 1.0 and prec == "fp32":
                    reasons = {str(b.reason).splitlines()[0][:150] for b in eg.break_reasons + ed.break_reasons}
                    for s in sorted(reasons): print("    reason:", s)
