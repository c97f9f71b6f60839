"""Entry point: `python main.py [overrides]` runs one job; `python main.py -m ...` runs a sweep (Hydra)."""
import os
from pathlib import Path

from sweep.cli import freeze_imports, launcher_cores, prepare_process, quiet_sacct_warnings, report_errors

prepare_process()
quiet_sacct_warnings()
# Hydra re-raises what it would otherwise print half-formatted, so that `report_errors` below can
# print user mistakes as one `error:` block and leave real bugs their traceback.
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
# Job processes that launchers start (submitit, joblib) unpickle this package: let them find it
# whatever their working directory.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent),
                                                         os.environ.get("PYTHONPATH")]))

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402

from sweep.config import register_configs  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> float | None:
    prepare_process()  # again: launchers run this function in processes that never executed this module
    from sweep.run import run  # imported here: `--help` and bad overrides answer without loading torch
    freeze_imports()
    hydra_cfg = HydraConfig.get()
    job_num = hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else 0
    with report_errors():  # here too, before Hydra would wrap the exception in a job failure
        summary = run(cfg, Path(hydra_cfg.runtime.output_dir), job_num=job_num, cores=launcher_cores(hydra_cfg))
    return summary["spearman_vs_rank"]["loss_sum"]["rho"]


if __name__ == "__main__":
    with report_errors():
        main()
