"""Benchmark: the batched engine's optimizer step, stacked (one tensor per parameter for all K copies,
`sweep/training/stacked_optimizer.py`) against the per-copy way it replaced (a view per copy and
parameter, each with its own state, stepped by one fused torch.optim call over K x parameters
tensors, its optimizer rebuilt whenever copies are dropped), and against stacked state stepped by
`torch._foreach` arithmetic (tried), in one process on the same tensors.

    python benchmarks/optimizer.py [--k 32] [--models demo:test_resnet resnet18@224] [--repeats 10]

Prints one table: per model and way, milliseconds per optimizer step (the median of --repeats after
two warm-ups; the fastest of --rounds rounds that take the ways in turn, so that a slow spell of the
machine hits them alike) and for dropping one copy of K - 1 (as the engine drops idle copies once its
queue is empty); the bytes a step must move at the least (read parameters, gradients and both
moments, write parameters and moments: 7 passes over the K copies' parameters) and the rate that
implies. Random gradients: only the arithmetic's cost is measured. Each way pays one copy of the
gradients per step, as in the engine (into its stacked buffers, or a clone as the foreach
arithmetic's scratch space).
"""
from __future__ import annotations

import argparse
import functools
import math
import statistics
import time

import pandas as pd
import timm
import torch

from sweep.config import Optimizer
from sweep.process import prepare_process
from sweep.training.copies import compacted
from sweep.training.fused_optimizer import BETAS, EPS, FusedOptimizer
from sweep.training.stacked_optimizer import StackedOptimizer, move_rows

LR = 1e-5


class PerCopy:
    """The engine's optimizer before it was stacked: views of the stacked tensors as K x n separate
    parameters, gradients copied into stacked buffers the views' .grad point into, one fused call."""

    def __init__(self, stacked: list[torch.Tensor]):
        self._build(stacked, previous=None)

    def _build(self, stacked, previous) -> None:
        self.stacked = stacked
        self.grads = [torch.zeros_like(s) for s in stacked]
        self.views = [[s[i] for s in stacked] for i in range(len(stacked[0]))]
        for i, views in enumerate(self.views):
            for view, g in zip(views, self.grads, strict=True):
                view.grad = g[i]
        old = getattr(self, "optimizer", None)
        self.optimizer = FusedOptimizer([v for views in self.views for v in views], Optimizer.adamw, LR, 0.0, 0.9)
        if old is not None:
            for old_views, new_views in zip(previous, self.views, strict=True):
                for o, n in zip(old_views, new_views, strict=True):
                    if o in old.state:
                        self.optimizer.state[n] = old.state[o]

    def step(self, grads: list[torch.Tensor]) -> None:
        for buffer, g in zip(self.grads, grads, strict=True):
            buffer.copy_(g)
        self.optimizer.step([v for views in self.views for v in views])

    def keep(self, indices: list[int]) -> None:
        self._build([s[indices] for s in self.stacked], previous=[self.views[i] for i in indices])


class Stacked:
    """The engine's optimizer now: stacked state, one fused call over per-copy views made once."""

    def __init__(self, stacked: list[torch.Tensor]):
        self.stacked = stacked
        self.grads = [torch.zeros_like(s) for s in stacked]
        self.optimizer = StackedOptimizer(stacked, self.grads, Optimizer.adamw, LR, 0.0, 0.9)

    def step(self, grads: list[torch.Tensor]) -> None:
        for buffer, g in zip(self.grads, grads, strict=True):
            buffer.copy_(g)
        self.optimizer.step()

    def keep(self, indices: list[int]) -> None:
        order = compacted(indices)  # as the engine drops copies: the last ones fill the holes
        moves = move_rows(order)
        for tensor in self.stacked:
            tensor[moves[0]] = tensor[moves[1]]
        self.optimizer.keep(order)


class StackedForeach:
    """Tried: the same stacked state stepped by torch._foreach arithmetic with per-copy bias corrections
    (no views; about 16 passes over the copies' parameters against the fused kernel's single pass)."""

    def __init__(self, stacked: list[torch.Tensor]):
        self.stacked = stacked
        self.exp_avg, self.exp_avg_sq = ([torch.zeros_like(s) for s in stacked] for _ in range(2))
        self.steps = torch.zeros(len(stacked[0]), dtype=torch.float64)

    def step(self, grads: list[torch.Tensor]) -> None:
        grads = [g.clone() for g in grads]  # scratch space, as vmap's fresh gradients would be
        self.steps += 1
        step_size = LR / (1 - BETAS[0] ** self.steps)
        scale = (1 / (torch.sqrt(1 - BETAS[1] ** self.steps) * step_size)).float()
        shift = (EPS / step_size).float()
        torch._foreach_lerp_(self.exp_avg, grads, 1 - BETAS[0])
        torch._foreach_mul_(grads, grads)
        torch._foreach_lerp_(self.exp_avg_sq, grads, 1 - BETAS[1])
        for g, v, p, m in zip(grads, self.exp_avg_sq, self.stacked, self.exp_avg, strict=True):
            per_copy = (-1, *([1] * (g.dim() - 1)))
            torch.sqrt(v, out=g)
            torch.addcmul(shift.view(per_copy), g, scale.view(per_copy), out=g)
            p.addcdiv_(m, g, value=-1)

    def keep(self, indices: list[int]) -> None:
        index = torch.tensor(indices)
        self.stacked, self.exp_avg, self.exp_avg_sq = ([t[index] for t in ts]
                                                       for ts in (self.stacked, self.exp_avg, self.exp_avg_sq))
        self.steps = self.steps[index]


def parameters(spec: str) -> list[torch.Tensor]:
    """The trainable parameters of `demo:<arch>` (10 classes, 32 px, as the demo builds it) or `<arch>@<px>`."""
    if spec.startswith("demo:"):
        model = timm.create_model(spec[5:], num_classes=10)
    else:
        model = timm.create_model(spec.split("@")[0])
    return [p.detach() for p in model.parameters() if p.requires_grad]


def median_ms(function, repeats: int) -> float:
    for _ in range(2):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def seconds_of(function) -> float:
    start = time.perf_counter()
    function()
    return 1e3 * (time.perf_counter() - start)


WAYS = {"per copy (before)": PerCopy, "stacked, fused over views (now)": Stacked,
        "stacked, foreach arithmetic (tried)": StackedForeach}


def measure(spec: str, k: int, repeats: int, rounds: int) -> list[dict]:
    """Each way's step and drop, in `rounds` rounds that take the ways in turn (so that a slower spell
    of the machine hits all of them alike); per way the fastest round."""
    params = parameters(spec)
    numel = sum(p.numel() for p in params)
    grads = [torch.randn(k, *p.shape) for p in params]
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for name, way in WAYS.items():
            optimizer = way([p.unsqueeze(0).repeat(k, *([1] * p.dim())) for p in params])
            step = median_ms(functools.partial(optimizer.step, grads), repeats)
            optimizer.keep([0, *range(2, k)])  # drop copy 1 of K (once: it shrinks the optimizer)
            drop = seconds_of(functools.partial(optimizer.keep, [0, *range(2, k - 1)]))  # and then one more
            best[name] = tuple(map(min, zip(best.get(name, (math.inf, math.inf)), (step, drop), strict=True)))
            del optimizer
    minimum = 7 * 4 * numel * k
    return [{"model": spec, "tensors": f"{len(params)} x {k}", "optimizer": name, "ms per step": round(step, 2),
             "ms per drop": round(drop, 2), "least bytes per step (MB)": round(minimum / 1e6),
             "implied GB/s": round(minimum / step / 1e6, 1)} for name, (step, drop) in best.items()]


def main() -> None:
    prepare_process()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=["demo:test_resnet", "resnet18@224"])
    parser.add_argument("--repeats", type=int, default=10, help="steps timed per way and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the ways (the fastest is kept)")
    args = parser.parse_args()
    rows = [row for spec in args.models for row in measure(spec, args.k, args.repeats, args.rounds)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, K={args.k}, AdamW")
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
