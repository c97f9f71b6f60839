"""One command that measures a GPU: the GPU tests, the benchmark rows at ImageNet size, and a lite0
run on the ImageNet sample against the same run on the CPU. Prints one table.

    python benchmarks/gpu_check.py            # on a machine with a GPU: about 5 to 8 minutes

Rows:
- `versions`: the device, Python, and the installed torch (with its CUDA and cuDNN), torchvision,
  timm, Hydra and the rest of what a result depends on (a node's own torch may be any in range).
- `tests`: `pytest -m gpu` (exact fp32, repeatable runs, the engine against the simple path, fp16
  and train mode in the engine bit for bit, the original's fp16 loss under CUDA autocast).
- `speed`: `benchmarks/speed.py` for resnet18, resnet34 and tf_efficientnet_lite0 at 224 px: the
  original loop, the simple path and the batched engine at the K that `execution.parallel=auto`
  chooses, in fp32 before the kernel choice (`@exact`: vmap's own convolutions) and after it (`auto`,
  with what each layer class ran and the milliseconds each class takes per step), and in the
  original's fp16 with a loss scaler per example (on vmap's own convolutions, which `auto` keeps in
  fp16), on the same examples (randomly initialised models, so every example runs --max-steps).
- `run`: `python main.py` on the device and on the CPU with the same overrides (default: lite0 on
  the development data's 300-image ImageNet sample, default probe): the rows agree within the
  tolerance below, and the summary's phases say where the device run's time went.

Tolerance (float rounding differs between a GPU and a CPU, so a loop near a decision can go either
way): every example has the same status, at least 90% take the same number of steps, and where the
steps are equal the loss sums agree within 1e-3 relative.

With --device cpu and small settings (tests/test_gpu_check.py) the same code runs on a CPU, so that
the script cannot rot where no GPU is lent.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from sweep.tolerance import DEVICES, agreement

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data"


def lite0_sample(data: Path) -> list[str]:
    return ["data=imagenet", f"data.images={data}/imagenet-val-sample/images",
            f"data.labels={data}/imagenet-val-sample/labels.csv",
            f"data.difficulty={data}/original/imagenet_examples_ammended.csv", "data.match=filename",
            "model=efficientnet_lite0"]


def versions(device: str) -> dict:
    """What ran: Python, the installed torch (its build, CUDA and cuDNN), and the versioned libraries."""
    import torch

    from sweep.run.summary import versions as installed
    from sweep.training.hardware import device_name
    found = installed()
    where = torch.device(device)
    cuda = f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if where.type == "cuda" else ""
    return {"check": "versions", "setting": device_name(where), "result": "info",
            "figures": f"Python {found.pop('python')}, " + ", ".join(f"{k} {v}" for k, v in found.items()) + cuda}


def gpu_tests(device: str) -> dict:
    """The tests marked gpu, their closing counts."""
    if device != "cuda":
        return {"check": "tests", "setting": "pytest -m gpu", "result": "not run", "figures": "no GPU asked for"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-n", "0", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True)
    counts = re.findall(r"(\d+) (passed|failed|skipped|error)", done.stdout)
    summary = ", ".join(f"{n} {what}" for n, what in counts) or done.stdout.strip().splitlines()[-1]
    return {"check": "tests", "setting": "pytest -m gpu", "result": "pass" if done.returncode == 0 else "FAIL",
            "figures": summary}


def speed(device: str, models: list[str], methods: list[str], examples: int, max_steps: int) -> list[dict]:
    """The benchmark's rows."""
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "speed.json"
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--device", device, "--models",
                               *models, "--methods", *methods, "--examples", str(examples), "--max-steps",
                               str(max_steps), "--json", str(table),
                               *(["--matmul-size", "512"] if device == "cpu" else [])],  # a CPU's peak: a glance
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0 or not table.exists():
            return [{"check": "speed", "setting": " ".join(models), "result": "FAIL",
                     "figures": (done.stderr or done.stdout).strip().splitlines()[-1]}]
        chosen = re.findall(r"batched:auto: K=(\d+) for (\d+) examples", done.stdout)
        rows = json.loads(table.read_text())
    out = []
    for row in rows:
        method = row["method"]
        if "K=auto" in method and chosen:
            method = method.replace("K=auto", f"K={chosen.pop(0)[0]} (auto)")
        out.append({"check": "speed", "setting": f"{row['model']}: {method}",
                    "result": "FAIL (steps differ)" if row["steps vs simple path"].startswith("DIFFER") else "pass",
                    "figures": f"{row['example-steps/s']} example-steps/s, {row['speedup']}x, "
                               f"{row['GFLOP/s']} GFLOP/s ({row['% of peak']}% of the {row['precision']} peak), "
                               f"{row['peak MB']} MB; steps {row['steps vs simple path']}"
                               + (f"; kernels: {row['kernels']}" if row["kernels"] else "")})
    return out


def run_main(out: Path, overrides: list[str], device: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), *overrides, f"execution.device={device}",
                           f"hydra.run.dir={out}", "progress=false"], cwd=ROOT, capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        raise RuntimeError(f"main.py on {device} failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads((out / "training_summary.json").read_text())


def compare(device: str, overrides: list[str]) -> list[dict]:
    """The run on the device against the same run on the CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            summary = run_main(Path(tmp) / "device", overrides, device, dict(os.environ))
            # GPUs hidden from the reference run, so that it takes the CPU's automatic path (workers)
            run_main(Path(tmp) / "cpu", overrides, "cpu", {**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        except RuntimeError as error:
            return [{"check": "run", "setting": " ".join(overrides), "result": "FAIL", "figures": str(error)}]
        on = {name: pd.read_csv(Path(tmp) / name / "single_example_results.csv") for name in ("device", "cpu")}
    matched = agreement(on["device"], on["cpu"], DEVICES)
    phases, execution = summary["phases"], summary["execution"]
    setting = f"{summary['config']['model']['arch']}, {matched.examples} examples, {execution['description']}"
    return [{"check": "run", "setting": f"{setting}: rows against the CPU's", "result":
                "pass" if matched.ok else "FAIL", "figures": matched.describe()},
            {"check": "run", "setting": f"{setting}: phases", "result":
                "pass" if phases["probe_share"] is None or phases["probe_share"] <= 0.25 else "FAIL (probe > 25%)",
             "figures": f"wall {summary['wall_seconds']:.1f} s; search {phases['search_seconds']:.1f} s, probe "
                        f"{phases['probe_seconds']:.1f} s ({100 * (phases['probe_share'] or 0):.0f}%), corrections "
                        f"{phases['corrections_seconds']:.1f} s at "
                        f"{(phases['correction_flops_per_second'] or 0) / 1e9:.1f} GFLOP/s; probe set "
                        f"{summary['probe']['size']} images"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=["resnet18@224", "resnet34@224", "tf_efficientnet_lite0@224"])
    parser.add_argument("--methods", nargs="+", default=["original", "simple", "batched:auto@exact", "batched:auto",
                                                         "original-fp16", "simple-fp16", "batched-fp16:auto"])
    parser.add_argument("--examples", type=int, default=192, help="examples per benchmark workload")
    parser.add_argument("--max-steps", type=int, default=3, help="updates per benchmark example")
    parser.add_argument("--run", nargs="*", default=None,
                        help="main.py overrides of the compared run (default: lite0 on the ImageNet sample of "
                             "../shared/data, all defaults)")
    args = parser.parse_args()
    overrides = args.run if args.run is not None else lite0_sample(SAMPLE)
    if args.run is None and not SAMPLE.is_dir():
        raise SystemExit(f"error: {SAMPLE} not found (the development data); name a run with --run ...")
    checks = [lambda: [versions(args.device)], lambda: [gpu_tests(args.device)],
              lambda: speed(args.device, args.models, args.methods, args.examples, args.max_steps),
              lambda: compare(args.device, overrides)]
    rows = []
    for check in checks:  # each row as it comes, so that a check cut short loses none before it
        for row in check():
            rows.append(row)
            print(f"{row['check']}: {row['setting']}: {row['result']} ({row['figures']})", flush=True)
    print()
    print(pd.DataFrame(rows).to_markdown(index=False))
    sys.exit(0 if all(row["result"] in ("pass", "not run", "info") for row in rows) else 1)


if __name__ == "__main__":
    main()
