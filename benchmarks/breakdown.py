"""Benchmark: where a step of the simple path goes, part by part, against this machine's limits.

    python benchmarks/breakdown.py [--models test_resnet resnet18 resnet34] [--steps 40] [--threads 1]

Each model as the demo builds it (10 classes, 32 px; the demo's preprocessing), in eval mode, fp32,
on one thread (as each of the default worker processes runs), stepped on one image as the loop steps
it: forward, the loss and the one host synchronisation a step makes, backward, the fused AdamW step,
and the per-example reset to the pretrained weights (per step at --steps-per-example). Measured in
the same run: the machine's fp32 matmul rate and its memory bandwidth (STREAM-style), both on
--threads threads. For each part: its FLOPs (counted as every run's summary counts them) and the
bytes it must move at the least (weights, gradients, optimizer state and activations, each read or
written once), the time each would take at the measured limits, and how close the part comes to the
larger of the two (100%: at the machine's limit).

Prints one table per model and a line with the limits. The median of --steps steps after warm-up
steps, the fastest of --rounds rounds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch
import torch.nn.functional as F

from sweep.config import TrainConfig
from sweep.data.universe.build import MEAN, STD
from sweep.models import create_model
from sweep.process import prepare_process
from sweep.training.flops import count_step
from sweep.training.loop import SingleExampleTrainer
from sweep.training.precision import PlainUpdates

BYTES = 4  # fp32


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second of memory traffic, STREAM's way: the fastest of a copy (c = a: one stream read,
    one written), a triad (c = a + 2 b: two read, one written) and c += a / b (three read, one
    written), each the fastest of `repeats` (one core streams faster from more arrays at once)."""
    a = torch.rand(megabytes * 2 ** 20 // BYTES) + 1
    b, c = torch.rand_like(a) + 1, torch.empty_like(a)
    operations = {2: lambda: c.copy_(a), 3: lambda: torch.add(a, b, alpha=2.0, out=c),
                  4: lambda: c.addcdiv_(a, b)}
    best = 0.0
    for streams, operation in operations.items():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            operation()
            best = max(best, streams * a.numel() * BYTES / (time.perf_counter() - start))
    return best


def matmul_rate(n: int = 1024, repeats: int = 5) -> float:
    """FLOP per second of the fastest of `repeats` n x n fp32 matmuls."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    best = 0.0
    for _ in range(repeats + 1):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start))
    return best


def activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of every module's output in one forward pass (leaf modules: what is written, and read back by
    the backward)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()
    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return total


def parts(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> dict[str, float]:
    """Median seconds of each part of a step, over `steps` steps of the loop's own calls."""
    trainer = SingleExampleTrainer(model, TrainConfig(), 1e-5, steps)
    trainer.reset()
    updates = PlainUpdates(trainer.params, TrainConfig(), 1e-5)
    seconds: dict[str, list[float]] = {name: [] for name in ("forward", "loss and sync", "backward", "optimizer",
                                                             "gradients freed")}
    for _ in range(steps + 3):
        marks = [time.perf_counter()]
        logits = model(x)
        marks.append(time.perf_counter())
        loss = F.cross_entropy(logits, y)
        torch.stack([loss.detach(), logits.detach().argmax(1)[0].float()]).tolist()
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        updates.optimizer.step()
        marks.append(time.perf_counter())
        updates.optimizer.zero_grad()
        marks.append(time.perf_counter())
        for name, start, end in zip(seconds, marks, marks[1:], strict=True):
            seconds[name].append(end - start)
    resets = []
    for _ in range(5):
        start = time.perf_counter()
        trainer.reset()
        resets.append(time.perf_counter() - start)
    return {**{name: statistics.median(times[3:]) for name, times in seconds.items()},
            "reset (per example)": statistics.median(resets)}


def breakdown(arch: str, steps: int, rounds: int, flops_per_second: float, bytes_per_second: float,
              steps_per_example: float) -> pd.DataFrame:
    model = create_model(arch, 10, 32, MEAN, STD).eval()
    x, y = torch.rand(1, 3, 32, 32), torch.tensor([3])
    cost = count_step(model, (3, 32, 32))
    weights = sum(p.numel() for p in model.parameters()) * BYTES
    state = weights + sum(b.numel() * b.element_size() for b in model.buffers())
    activations = activation_bytes(model, x)
    seconds = {}
    for _ in range(rounds):
        for name, value in parts(model, x, y, steps).items():
            seconds[name] = min(seconds.get(name, float("inf")), value)
    backward_flops = cost.update_flops - cost.forward_flops
    work = {  # (FLOPs, bytes at the least)
        "forward": (cost.forward_flops, weights + activations),
        "loss and sync": (0, 0),
        "backward": (backward_flops, 2 * weights + 2 * activations),  # weights read, gradients written
        "optimizer": (0, 7 * weights),  # parameters, gradients, two moments read; three written
        "gradients freed": (0, 0),
        "reset (per example)": (0, 2 * state),
    }
    rows = []
    for name, (flops, moved) in work.items():
        measured = seconds[name]
        per_step = measured / steps_per_example if name.startswith("reset") else measured
        bound = max(flops / flops_per_second, moved / bytes_per_second)
        rows.append({"part": name, "ms": round(1e3 * measured, 3), "ms per step": round(1e3 * per_step, 3),
                     "GFLOP": round(flops / 1e9, 4), "MB moved": round(moved / 1e6, 1),
                     "ms at the limit": round(1e3 * bound, 3),
                     "of the limit": f"{bound / measured:.0%}" if bound else "-"})
    total = sum(row["ms per step"] for row in rows)
    limit = sum(row["ms at the limit"] / (steps_per_example if row["part"].startswith("reset") else 1)
                for row in rows)
    rows.append({"part": "step", "ms": "", "ms per step": round(total, 3), "GFLOP": round(cost.update_flops / 1e9, 4),
                 "MB moved": "", "ms at the limit": round(limit, 3), "of the limit": f"{limit / total:.0%}"})
    print(f"\n{arch} at 32 px: {weights / BYTES / 1e6:.2f}M parameters, activations {activations / 1e6:.2f} MB")
    return pd.DataFrame(rows)


def main() -> None:
    prepare_process()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["test_resnet", "resnet18", "resnet34"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps-per-example", type=float, default=35.0,
                        help="to spread the reset over steps (resnet18's demo mistakes took 35 on average at lr=1e-5)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flops_per_second, bytes_per_second = matmul_rate(), memory_bandwidth()
    print(f"torch {torch.__version__}, {args.threads} thread(s): matmul {flops_per_second / 1e9:.1f} GFLOP/s, "
          f"memory {bytes_per_second / 1e9:.1f} GB/s")
    for arch in args.models:
        print(breakdown(arch, args.steps, args.rounds, flops_per_second, bytes_per_second,
                        args.steps_per_example).to_markdown(index=False))


if __name__ == "__main__":
    main()
