"""The launching process of a shared-selection sweep (on a cluster, the login node), measured: its wall
time and peak resident memory from its start until the shared selection is drawn, just before the
jobs are launched, with a correctness matrix and without one.

    python benchmarks/launcher.py [--models 4 50] [--slurm]

- `matrix`: N models over the development data's 300 ImageNet images (`../shared/data`) with a
  generated N x 300 correctness matrix (40 images wrong for every model, each model right on a random
  80% of the others) and a map of N timm names
  to its rows: the rows are read, no model is loaded.
- `search`: the demo's zoo architectures (4) with a cold wrong-set cache (the test universe copied
  to a fresh cache): each wrong set is searched by a task of the sweep's launcher (the local SLURM
  cluster with --slurm; else the basic launcher, whose tasks run in the launching process itself).

The process is stopped once the draw is logged (the jobs themselves are not measured). Prints one
table.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DRAWN = "shared selection: "  # then "<n> of the <m> images all <k> wrong sets hold -> <path>"
ZOO = ["test_resnet", "test_efficientnet", "test_vit", "test_byobnet"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]


def measure(overrides: list[str]) -> tuple[float, float]:
    """(seconds, peak resident MB) of `python main.py -m overrides` until its draw is logged."""
    command = [sys.executable, str(ROOT / "main.py"), "-m", *overrides, "progress=false", "aggregate=false"]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, lines = 0.0, []
    for line in process.stdout:
        lines.append(line)
        peak = max(peak, _resident_peak_mb(process.pid))
        if DRAWN in line and " wrong sets hold -> " in line:
            seconds = time.perf_counter() - started
            process.kill()
            process.wait()
            return seconds, peak
    raise SystemExit(f"{' '.join(command)}: ended without a draw:\n" + "".join(lines[-20:]))


def _resident_peak_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM")), 0.0)


def matrix_case(n: int, tmp: Path) -> list[str]:
    """Overrides of an N-model sweep whose wrong sets are rows of a generated matrix."""
    import timm
    sample = DATA / "imagenet-val-sample"
    labels = pd.read_csv(sample / "labels.csv")
    order = (DATA / "original" / "imagenet_examples_ammended.csv").read_text().strip().split(",")
    by_name = {Path(p).name: p for p in order}
    columns = [by_name[f] for f in labels["file"] if f in by_name]
    rng = np.random.default_rng(0)
    correct = rng.random((n, len(columns))) < 0.8
    correct[:, :40] = False  # 40 images every model gets wrong: the shared pool
    np.save(tmp / "m.npy", correct)
    archs = [a for a in timm.list_models() if not a.startswith("test_")][:n]
    (tmp / "models.csv").write_text(",".join(f"row{i}" for i in range(n)) + "\n")
    (tmp / "examples.csv").write_text(",".join(columns) + "\n")
    pd.DataFrame({"arch": archs, "row": [f"row{i}" for i in range(n)]}).to_csv(tmp / "map.csv", index=False)
    return ["data=imagenet", f"data.images={sample}/images", f"data.labels={sample}/labels.csv",
            f"data.difficulty={DATA}/original/imagenet_examples_ammended.csv", "data.match=filename",
            f"data.correctness={tmp / 'm.npy'}", f"data.correctness_examples={tmp / 'examples.csv'}",
            f"data.correctness_models={tmp / 'models.csv'}", f"data.correctness_model_map={tmp / 'map.csv'}",
            f"model.arch={','.join(archs)}", "selection.shared=true", "selection.min_shared=1", "sample_size=5",
            f"hydra.sweep.dir={tmp / 'sweep'}"]


def search_case(tmp: Path, slurm: bool) -> list[str]:
    """Overrides of the demo zoo's sweep with a cold wrong-set cache (the universe of the tests)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.configs import TINY_UNIVERSE, tiny_universe_overrides
    from sweep.data.demo import open_demo
    from sweep.run.cache import cache_root
    universe = open_demo(dict(TINY_UNIVERSE), cache_root(None)).universe.images_root.parent
    shutil.copytree(universe, tmp / "cache" / universe.name)
    return [f"model.arch={','.join(ZOO)}", "selection.shared=true", "selection.min_shared=1", "sample_size=5",
            *tiny_universe_overrides(tmp / "cache"), f"hydra.sweep.dir={tmp / 'sweep'}", *(SLURM if slurm else [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, nargs="+", default=[4, 50], help="models of the matrix cases")
    parser.add_argument("--slurm", action="store_true", help="the search case's tasks on the local SLURM cluster")
    args = parser.parse_args()
    rows = []
    for n in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            seconds, peak = measure(matrix_case(n, Path(tmp)))
        rows.append({"case": "matrix rows", "models": n, "seconds to the draw": round(seconds, 1),
                     "peak MB": round(peak)})
    with tempfile.TemporaryDirectory() as tmp:
        seconds, peak = measure(search_case(Path(tmp), args.slurm))
    rows.append({"case": f"searched ({'SLURM tasks' if args.slurm else 'basic launcher: in this process'})",
                 "models": len(ZOO), "seconds to the draw": round(seconds, 1), "peak MB": round(peak)})
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
