"""Benchmark: the original scripts' loop vs our simple path vs the batched engine, same examples, one process.

    python benchmarks/engine.py [--models demo:test_resnet resnet18@224 tf_efficientnet_lite0@224]
                                [--parallel 4 8] [--examples 16] [--max-steps 10] [--device cpu]

Prints one table: example-steps (optimizer updates) per second, speedup over the original loop,
achieved GFLOP/s (forward + backward FLOPs of one step from torch.utils.flop_counter) and its
fraction of this machine's fp32 matmul throughput (measured here too), and peak memory (resident
high-water mark on CPU, allocated on CUDA).
`demo:<arch>` uses the embedded universe's pretrained model and its real mistakes at lr=1e-5 (so
examples finish at different steps); `<arch>@<px>` uses a randomly initialised ImageNet-size model
on random images with the least likely class as label, so every example runs max-steps updates.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from sweep.config import TrainConfig, UniverseConfig  # noqa: E402
from sweep.correct import SingleExampleTrainer  # noqa: E402
from sweep.data import load_image, model_transform, read_examples  # noqa: E402
from sweep.engine import BatchedTrainer  # noqa: E402
from sweep.models import load_checkpoint  # noqa: E402
from sweep.selection import find_wrong, sample  # noqa: E402
from sweep.sources import cache_root  # noqa: E402
from sweep.universe.build import build_universe, pretrained_weights  # noqa: E402


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets the resident-set high-water mark (Linux)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


def workload(spec: str, n_examples: int, device: torch.device):
    """(model, [(x, y)], lr) for a model spec."""
    if spec.startswith("demo:"):
        arch, cfg = spec[5:], UniverseConfig()
        universe = build_universe(cfg, cache_root(None))
        model = load_checkpoint(universe.new_model(arch), pretrained_weights(universe, arch, cfg.pretrain_epochs, 0))
        transform = model_transform(model, training=False)
        examples = read_examples(universe.images_root, universe.labels_csv, universe.difficulty_csv)
        wrong, _ = find_wrong(model.eval(), examples, lambda e: transform(load_image(e.path)), torch.device("cpu"),
                              256, progress=False)
        chosen = sample(wrong, n_examples, seed=0)
        return model.to(device), [(transform(load_image(e.path)).to(device), e.label) for e in chosen], 1e-5
    arch, size = spec.split("@")
    torch.manual_seed(0)
    model = timm.create_model(arch).to(device).eval()
    xs = torch.randn(n_examples, 3, int(size), int(size), device=device)
    with torch.no_grad():
        labels = model(xs).argmin(1).tolist()
    return model, list(zip(xs, labels)), 1e-5


def step_flops(model, x) -> int:
    """FLOPs of one training step: 3x the counted forward FLOPs (backward = 2x forward).

    Counting the backward pass directly over-counts depthwise convolutions (torch 2.14's
    flop counter ignores `groups` there: 32 GFLOP instead of about 2.3 for tf_efficientnet_lite0).
    """
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x[None])
    return 3 * counter.get_total_flops()


def original_loop(model, examples, lr, max_steps):
    """As the original scripts: load_state_dict reset, a new (default, non-fused) AdamW per example."""
    state = copy.deepcopy(model.state_dict())
    updates = 0
    for x, y in examples:
        model.load_state_dict(state)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        target = torch.tensor([y], device=x.device)
        for t in range(max_steps + 1):
            logits = model(x[None])
            loss = F.cross_entropy(logits, target)
            if logits.argmax(1).item() == y or t == max_steps:
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            updates += 1
    model.load_state_dict(state)
    return updates, None


def simple_path(model, examples, lr, max_steps):
    trainer = SingleExampleTrainer(model, TrainConfig(), lr, max_steps)
    outcomes = [trainer.fit(x[None], y) for x, y in examples]
    trainer.reset()
    return sum(o.steps_taken for o in outcomes), [o.steps_taken for o in outcomes]


def batched(k):
    def run(model, examples, lr, max_steps):
        engine = BatchedTrainer(model, TrainConfig(), lr, max_steps, parallel=k)
        outcomes = dict(engine.run((i, x, y) for i, (x, y) in enumerate(examples)))
        steps = [outcomes[i].steps_taken for i in range(len(examples))]
        return sum(steps), steps
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["demo:test_resnet", "resnet18@224", "tf_efficientnet_lite0@224"])
    parser.add_argument("--parallel", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=10, help="cap for the @px workloads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    peak = matmul_gflops(device)
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"threads={torch.get_num_threads()}, fp32 matmul {peak:.0f} GFLOP/s, torch {torch.__version__}", flush=True)
    rows = []
    for spec in args.models:
        model, examples, lr = workload(spec, args.examples, device)
        max_steps = 1000 if spec.startswith("demo:") else args.max_steps
        flops = step_flops(model, examples[0][0])
        methods = [("original loop", original_loop), ("simple path", simple_path)]
        methods += [(f"batched K={k}", batched(k)) for k in args.parallel]
        baseline, reference = None, None
        for name, method in methods:
            reset_peak_memory(device)
            _sync(device)
            start = time.perf_counter()
            updates, steps = method(model, examples, lr, max_steps)
            _sync(device)
            seconds = time.perf_counter() - start
            rate = updates / seconds
            baseline = baseline or rate
            reference = reference or steps
            rows.append({"model": spec, "method": name, "examples": len(examples), "updates": updates,
                         "seconds": round(seconds, 2), "example-steps/s": round(rate, 1),
                         "speedup": round(rate / baseline, 2), "GFLOP/step": round(flops / 1e9, 3),
                         "GFLOP/s": round(rate * flops / 1e9, 1), "% of matmul peak": round(100 * rate * flops / 1e9 / peak, 1),
                         "peak MB": round(peak_memory_mb(device)),
                         "same steps": "" if steps is None else str(steps == reference)})
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    print()
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
