"""Loss-to-correct sweeps: how hard is it to fine-tune a pretrained classifier out of each mistake."""
import os

# Intel MKL's multithreaded GEMM is not run-to-run reproducible by default: at 2 threads the
# gradient of a convolution on a 1x1 feature map (the demo model's last block) varied between
# identical calls. Conditional numerical reproducibility (read at MKL's first call, so set here,
# before any computation) makes every run give the same bits at the same thread count, at no
# measurable cost. A value set by the user is kept.
os.environ.setdefault("MKL_CBWR", "AUTO")
