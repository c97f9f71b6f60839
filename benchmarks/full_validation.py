"""The full ImageNet validation set on paper: FLOPs and expected wall time of each phase of a run over
every mistake of the 50,000 images, on one GPU and on N SLURM GPU tasks.

    python benchmarks/full_validation.py [--rates 5 20] [--tasks 16]

FLOPs are counted as every run's summary counts them (sweep/training/flops.py, batch 1, 224 px);
the workload (mistakes, updates per mistake) and the achieved rates are assumptions, printed with
the table. Phases: the wrong-set search (one forward pass per image, or decoding the JPEGs if that
is slower), the corrections (per mistake: its updates and the forward pass of its last state), the
probe (probe.size=auto on a GPU: 1,000 images decoded and judged once at the pretrained weights,
then per mistake at most probe.budget of its correction's FLOPs) and a fixed cost (start-up,
statistics, figures). With N tasks the mistakes are split by shard.index / shard.count; the wrong
set is searched once (by the first task, under the cache's lock; the others wait and read it), so
the search does not shrink.
"""
from __future__ import annotations

import argparse

import pandas as pd
import timm

from sweep.training.flops import count_step

# (timm architecture, mistakes among the 50,000 images, mean updates per mistake, where those come from)
WORKLOADS = {"resnet34": ("resnet34", 13_000, 46, "about 74% top-1; 47 states evaluated per mistake, as read "
                                                  "from the code in the issue (the original's resnet34.a3_in1k "
                                                  "outputs: 25.2 steps)"),
             "efficientnet_lite0": ("tf_efficientnet_lite0", 12_450, 4.2, "75.1% top-1; 4.2 updates per mistake, "
                                    "as its 50 mistakes of the ImageNet sample took at lr=1e-5")}
IMAGES, PROBE_SET, FIXED_SECONDS = 50_000, 1000, 30
DECODE_PER_CORE = 150  # ImageNet JPEGs decoded and resized per second by one core (PIL)


def phase_flops(arch: str, mistakes: int, updates: float, budget: float) -> dict[str, float]:
    """FLOPs of each phase of the whole run ("probe set": judging the set at the pretrained weights,
    which each task does once)."""
    cost = count_step(timm.create_model(arch), (3, 224, 224))
    corrections = mistakes * cost.correction_flops(updates)
    return {"search": IMAGES * cost.forward_flops, "corrections": corrections, "probe": budget * corrections,
            "probe set": PROBE_SET * cost.forward_flops}


def seconds(phase: str, flops: float, rate: float, cores: int, tasks: int) -> float:
    """Wall seconds of a phase on `tasks` GPUs at `rate` TFLOP/s each, with `cores` CPU cores per GPU."""
    compute = flops / (rate * 1e12)
    if phase == "search":  # once, by one task, decoded by DataLoader workers while the GPU computes
        return max(compute, IMAGES / (DECODE_PER_CORE * cores))
    if phase == "probe set":  # each task decodes (one thread) and judges the set once
        return compute + PROBE_SET / DECODE_PER_CORE
    return compute / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[5.0, 20.0],
                        help="achieved TFLOP/s per GPU (fp32, TF32 off) of every phase; two columns each")
    parser.add_argument("--tasks", type=int, default=16, help="SLURM GPU tasks (shards)")
    parser.add_argument("--cores", type=int, default=16, help="CPU cores per GPU, for decoding")
    parser.add_argument("--budget", type=float, default=0.25, help="probe.budget")
    args = parser.parse_args()
    rows = []
    for name, (arch, mistakes, updates, source) in WORKLOADS.items():
        flops = phase_flops(arch, mistakes, updates, args.budget)
        flops["run"] = sum(flops.values())  # FLOPs of the phases together (the probe set counted once)
        for phase, phase_total in flops.items():
            row = {"model": name, "phase": phase, "PFLOP": round(phase_total / 1e15, 2)}
            for rate in args.rates:
                for tasks in (1, args.tasks):
                    wall = {p: seconds(p, f, rate, args.cores, tasks) for p, f in flops.items() if p != "run"}
                    value = sum(wall.values()) + FIXED_SECONDS if phase == "run" else wall[phase]
                    row[f"{tasks} GPU{'s' * (tasks > 1)} @ {rate:g} TFLOP/s"] = f"{value / 60:.1f} min"
            rows.append(row)
        print(f"{name}: {mistakes:,} mistakes, {updates:g} updates each ({source})")
    print(f"decoding: {DECODE_PER_CORE} images/s per core, {args.cores} cores per GPU; fixed cost {FIXED_SECONDS} s "
          f"per job; probe.budget={args.budget:g}, probe set {PROBE_SET} images\n")
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
