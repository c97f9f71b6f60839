"""Hydra entry point: `python main.py [overrides]` runs one job; `python main.py -m ...` runs a sweep."""
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from sweep.config import register_configs
from sweep.run import run

register_configs()
log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = run(cfg, out_dir)
    log.info("outputs in %s", out_dir)
    return summary["spearman_vs_rank"]["loss_sum"]["rho"]


if __name__ == "__main__":
    main()
