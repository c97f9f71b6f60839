"""Hydra entry point: `python main.py [overrides]` runs one job; `python main.py -m ...` runs a sweep."""
import logging
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from sweep.config import register_configs
from sweep.run import run

# Job processes that launchers start (submitit, joblib) unpickle this package: let them find it
# whatever their working directory.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent),
                                                         os.environ.get("PYTHONPATH")]))
register_configs()
log = logging.getLogger(__name__)


def threads_per_job(hydra_cfg) -> int | None:
    """Under the joblib launcher, share the cores among the parallel jobs."""
    n_jobs = OmegaConf.select(hydra_cfg, "launcher.n_jobs")
    if n_jobs is None:
        return None
    n_jobs = os.cpu_count() if n_jobs < 0 else n_jobs
    return max(1, (os.cpu_count() or 1) // n_jobs)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> None:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    job_num = hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else 0
    summary = run(cfg, out_dir, job_num=job_num, threads=threads_per_job(hydra_cfg))
    log.info("outputs in %s", out_dir)
    return summary["spearman_vs_rank"]["loss_sum"]["rho"]


if __name__ == "__main__":
    main()
