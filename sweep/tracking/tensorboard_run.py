"""A job as TensorBoard event files in `tensorboard/` of its run directory: loss_sum and
steps_to_correct per example (step = example_index), and at the end every scalar statistic with the
flat config as hparams (TensorBoard's hparams plugin)."""
from __future__ import annotations

from pathlib import Path

from sweep.tracking.metrics import example_metrics, scalars_of

FOLDER = "tensorboard"


class TensorboardJob:
    def __init__(self, directory: Path, params: dict):
        from torch.utils.tensorboard import SummaryWriter
        self.writer, self.params = SummaryWriter(log_dir=str(directory / FOLDER)), params

    def row(self, row: dict) -> None:
        for key, value in example_metrics(row).items():
            self.writer.add_scalar(f"example/{key}", value, int(row["example_index"]))
        self.writer.flush()

    def finish(self, summary: dict, directory: Path) -> None:
        self.writer.add_hparams(self.params, scalars_of(summary), run_name=".")
        self.writer.close()

    def abort(self, error: BaseException) -> None:
        self.writer.close()
