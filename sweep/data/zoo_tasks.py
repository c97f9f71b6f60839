"""`ltc-zoo` at cluster scale: one task per model through any Hydra launcher, merged into the matrix.

    ltc-zoo-tasks -m images=DIR labels=labels.csv out=OUT 'model_spec=SPEC,SPEC,...' [hydra/launcher=slurm ...]

Each task evaluates one model (SPEC as for `ltc-zoo`; one with `=` in quotes: 'model_spec="a=w.pth",b')
on every image and writes its row into `OUT/rows/`; a model whose row is written for these images is
not evaluated again, so a rerun after a failure evaluates only what is missing. When the sweep ends,
the rows of its models, in the order given, are merged into `correctness.npy`, `models.csv`,
`examples.csv` and `difficulty.csv` exactly as `ltc-zoo` writes them (a missing row stops the merge,
naming it; a task's error is in its folder, `OUT/tasks/<n>/job_failure.json`). The tasks run in
`OUT/tasks/<n>/`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, OmegaConf

from sweep.errors import UserError
from sweep.files import atomic_write_text
from sweep.outputs import record_failure

log = logging.getLogger(__name__)


@dataclass
class ZooTaskConfig:
    images: str = MISSING  # folder of the labelled images
    labels: str = MISSING  # CSV with columns file,label (file relative to images)
    out: str = MISSING     # where the matrix (and the rows, and the tasks' folders) go
    model_spec: str = MISSING  # one model per task: arch, arch=state_dict.pth or arch@pypi_package
    batch_size: int = 64


ConfigStore.instance().store(name="zoo_tasks_schema", node=ZooTaskConfig)


def row_path(out: Path, spec: str) -> Path:
    return out / "rows" / f"{hashlib.sha256(spec.encode()).hexdigest()[:16]}.npz"


def _images_digest(files: list[str]) -> str:
    return hashlib.sha256("\n".join(files).encode()).hexdigest()[:16]


def evaluate_task(cfg: DictConfig) -> None:
    """One model's row, unless written for these images already."""
    from sweep.data.zoo import evaluate_spec, labelled_images
    table, paths = labelled_images(Path(cfg.images), Path(cfg.labels))
    files = list(table["file"])
    path = row_path(Path(cfg.out), cfg.model_spec)
    if path.exists() and str(np.load(path)["images"]) == _images_digest(files):
        log.info("%s: its row is written already (%s)", cfg.model_spec, path)
        return
    name, right, prob = evaluate_spec(cfg.model_spec, table, paths, Path(cfg.labels), cfg.batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".partial.npz")
    np.savez(staging, name=name, right=right, prob=prob, images=_images_digest(files))
    staging.replace(path)
    log.info("%s: row written (%s)", name, path)


class ZooSweep(Callback):
    """Before any task: the settings and the labelled images checked (one `error:` block, exit status 2);
    at the sweep's end: the rows of its models, in the order the command gave them, as one matrix."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from sweep.data.zoo import labelled_images
        from sweep.process import report_errors
        with report_errors():  # exits here: Hydra turns a callback's exception into a warning and goes on
            from sweep.multirun import sweep_jobs
            swept = {override.split("=", 1)[0] for job in sweep_jobs(config)[0] for override in job}
            missing = [key for key in ("images", "labels", "out", "model_spec")
                       if OmegaConf.is_missing(config, key) and key not in swept]
            if missing:
                raise UserError(f"{', '.join(missing)}: required, not set (e.g. {missing[0]}=...)")
            labelled_images(Path(config.images), Path(config.labels))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from hydra.core.global_hydra import GlobalHydra

        from sweep.data.correctness import write_matrix
        from sweep.data.zoo import labelled_images
        from sweep.multirun import sweep_jobs
        loader = GlobalHydra.instance().config_loader()
        jobs = [loader.load_sweep_config(config, overrides) for overrides in sweep_jobs(config)[0]]
        out, specs = Path(config.out), [job.model_spec for job in jobs]
        table, _ = labelled_images(Path(config.images), Path(config.labels))
        files = list(table["file"])
        rows = {spec: np.load(row_path(out, spec)) for spec in specs if row_path(out, spec).exists()}
        missing = [spec for spec in specs if spec not in rows or str(rows[spec]["images"]) != _images_digest(files)]
        if missing:
            print(f"error: {len(missing)} of the {len(specs)} models have no row, so no matrix was written (their "
                  f"tasks' logs are in {out / 'tasks'}): {', '.join(missing)}; rerun the same command", file=sys.stderr)
            sys.exit(1)
        write_matrix(out, [str(rows[s]["name"]) for s in specs], files, np.array([rows[s]["right"] for s in specs]),
                     np.array([rows[s]["prob"] for s in specs]))
        atomic_write_text(out / "tasks" / "merged.json", json.dumps({"models": specs}, indent=1) + "\n")
        log.info("correctness matrix %d x %d and ranking -> %s", len(specs), len(files), out)


CONF = str(Path(__file__).resolve().parents[2] / "conf")  # this checkout's, beside main.py's (launcher presets)


@hydra.main(version_base="1.3", config_path=CONF, config_name="zoo_tasks")
def _task(cfg: DictConfig) -> None:
    from sweep.process import prepare_process, report_errors
    prepare_process()
    hydra_cfg = HydraConfig.get()
    with report_errors():
        if hydra_cfg.mode.name != "MULTIRUN":
            raise UserError("ltc-zoo-tasks runs one task per model as a sweep: add -m (or use ltc-zoo in one process)")
    try:
        evaluate_task(cfg)
    except Exception as error:  # recorded in the task's folder; the merge names the model without a row
        log.error("%s: %s", cfg.model_spec, record_failure(Path(hydra_cfg.runtime.output_dir), error),
                  exc_info=not isinstance(error, UserError))


def main() -> None:
    from sweep.process import report_errors
    with report_errors():
        _task()


if __name__ == "__main__":
    main()
