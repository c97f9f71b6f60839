"""Benchmark: the aggregate of a zoo study at population scale, on synthetic runs.

    python benchmarks/aggregate_scale.py [--models 500] [--examples 1000] [--sizes 50 500] [--figures]

Writes a sweep of `--models` runs that each corrected the same `--examples` images (a shared
selection): costs that grow with difficulty, each model with noise of its own and some 10% never
corrected; each job's summary with its statistics, as jobs write them (computed here first, in
parallel, and not timed: a job computes them once, at its end). Then runs the aggregate as
`python analysis/aggregate.py DIR` does, in a fresh process, and prints one table: per size, the
rows, the wall time of the aggregate, and its peak memory (the aggregate and the processes it forks).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.parallel import run_all  # noqa: E402  (the checkout, importable from anywhere)
from sweep.outputs import COLUMNS  # noqa: E402
from sweep.stats.research import STATISTICS_VERSION, run_statistics  # noqa: E402


def job_rows(model: int, examples: int, ranks: np.ndarray) -> pd.DataFrame:
    """One model's rows: loss to correct growing with difficulty, with this model's own noise."""
    rng = np.random.default_rng(model)
    difficulty = ranks / ranks.max()
    loss = np.exp(1.5 * difficulty + rng.normal(0, 0.8 + 0.4 * rng.random(), examples))
    censored = rng.random(examples) < 0.1
    steps = np.maximum(1, np.round(loss * 4)).astype(int)
    initial = 1 + difficulty + rng.normal(0, 0.5, examples)
    return pd.DataFrame({
        "example_index": range(examples), "path": [f"/val/{i:05d}.png" for i in range(examples)],
        "total_loss_to_correct": np.where(censored, -1, loss + 0.1), "universal_difficulty_rank": ranks,
        "label": 1, "initial_prediction": 2, "status": np.where(censored, "never_correct", "correct"),
        "steps_to_correct": np.where(censored, -1, steps), "loss_sum": loss, "initial_loss": initial,
        "final_loss": 0.5, "initial_margin": -initial, "initial_grad_norm": initial * 2, "initial_el2n": initial / 2,
        "weight_distance": 0.1, "updates": np.where(censored, 1000, steps), "skipped_updates": 0, "probe_images": 50,
        "probe_error_after": 0.2, "drawdown": rng.normal(0.01, 0.01, examples), "probe_flips_to_wrong": 0,
        "probe_flips_to_right": 0, "probe_loss_after": 0.5, "probe_loss_increase": rng.normal(0.02, 0.01, examples),
        "real_labels": "", "label_in_real": "", "prediction_in_real": "", "arithmetic": "synthetic",
        "seconds": 1.0})[COLUMNS]


def write_job(sweep: Path, model: int, examples: int) -> None:
    ranks = np.sort(np.random.default_rng(10_000).choice(50_000, examples, replace=False)) + 1
    rows = job_rows(model, examples, ranks)
    job = sweep / str(model)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(
        f"model:\n  arch: m{model:03d}\nlr: 1.0e-05\nseed: 0\nsample_size: {examples}\nselection:\n  shared: true\n"
        f"data:\n  name: synthetic\n")
    rows.to_csv(job / "single_example_results.csv", index=False)
    values, reasons = run_statistics(rows)
    wrong = int(np.random.default_rng(model + 1).integers(5_000, 40_000))
    (job / "training_summary.json").write_text(json.dumps({
        "selection": {"examples": 50_000, "wrong": wrong, "unreadable": 0, "selected": examples, "shared": True},
        "probe": {}, "examples_processed": examples, "statistics_version": STATISTICS_VERSION,
        "statistics": {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in values.items()},
        "not_computable": reasons}))


MEASURED = """
import json, resource, sys
from analysis.aggregate import main
main(sys.argv[1:])
usage = [resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print(json.dumps(usage))
"""


def aggregate(sweep: Path, figures: bool) -> tuple[float, float]:
    """(wall seconds, peak MB of the largest of the aggregate's processes) of `python analysis/aggregate.py
    DIR` in a fresh process."""
    command = [sys.executable, "-c", MEASURED, str(sweep), *([] if figures else ["--no-figures"])]
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    return seconds, max(json.loads(done.stdout.strip().splitlines()[-1])) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[50, 500], help="numbers of models")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--figures", action="store_true", help="with the figures (default: tables and report)")
    args = parser.parse_args()
    results = []
    for models in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            sweep = Path(tmp) / "sweep"
            start = time.perf_counter()
            run_all([(write_job, sweep, model, args.examples) for model in range(models)])
            made = time.perf_counter() - start
            seconds, peak = aggregate(sweep, args.figures)
            results.append({"models": models, "examples": args.examples, "rows": models * args.examples,
                            "aggregate s": round(seconds, 1), "s per 1,000 rows": round(1e3 * seconds / (models *
                                                                                               args.examples), 3),
                            "peak MB (largest process)": round(peak), "sweep written in s": round(made, 1)})
    print(pd.DataFrame(results).to_markdown(index=False))


if __name__ == "__main__":
    main()
