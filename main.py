"""Entry point: `python main.py [overrides]` runs one job; `python main.py -m ...` runs a sweep (Hydra)."""
import logging
import os
import shutil
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from sweep.config import Config, Stage, register_configs, validate
from sweep.errors import DirectoryInUse, UserError
from sweep.outputs import clear_failure, record_failure, refusal_directory
from sweep.process import freeze_imports, launcher_cores, prepare_process, quiet_sacct_warnings, report_errors
from sweep.run.shared import search_task, shared_path

prepare_process()
quiet_sacct_warnings()
# Hydra re-raises what it would otherwise print half-formatted, so that `report_errors` below can
# print user mistakes as one `error:` block and leave real bugs their traceback.
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: Config) -> float | None:
    prepare_process()  # again: launchers run this function in processes that never executed this module
    with report_errors():
        validate(cfg)  # impossible values answer in a second, before torch and timm load
    from sweep.run.job import run  # imported here: `--help` and bad overrides answer without loading torch
    freeze_imports()
    hydra_cfg = HydraConfig.get()
    out_dir, cores = Path(hydra_cfg.runtime.output_dir), launcher_cores(hydra_cfg)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        with report_errors():  # here too, before Hydra would wrap the exception in a job failure
            if cfg.selection.shared:
                raise UserError("selection.shared=true shares one selection among a sweep's models: run a sweep "
                                "(python main.py -m model.arch=a,b,...)")
            return run(cfg, out_dir, cores=cores)["statistics"]["rho_loss_sum"]
    if cfg.stage == Stage.search:  # a search task of a sweep's shared selection (the staged sweeper)
        clear_failure(out_dir)
        try:
            search_task(cfg, out_dir, hydra_cfg.job.num, cores)
        except Exception as error:  # recorded; the sweep names it and stops before its draw
            logging.getLogger("main").error("search task failed: %s", record_failure(out_dir, error),
                                            exc_info=not isinstance(error, UserError))
        return None
    refusal = refusal_directory(Path(hydra_cfg.sweep.dir), hydra_cfg.job.num)
    shutil.rmtree(refusal, ignore_errors=True)  # this job is tried again: an earlier refusal is history
    try:  # one job of a sweep: its failure is recorded, and the sweep goes on (named at its end)
        shared = shared_path(Path(hydra_cfg.sweep.dir), cfg) if cfg.selection.shared else None
        return run(cfg, out_dir, job_num=hydra_cfg.job.num, cores=cores, shared=shared)["statistics"]["rho_loss_sum"]
    except Exception as error:
        # refused by another run's hold on the directory: recorded in the sweep's, not in the held one
        where = refusal if isinstance(error, DirectoryInUse) else out_dir
        logging.getLogger("main").error("job %d failed: %s", hydra_cfg.job.num, record_failure(where, error),
                                        exc_info=not isinstance(error, UserError))
        return None


if __name__ == "__main__":
    with report_errors():
        main()
