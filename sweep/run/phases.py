"""Where a job's time went: wall seconds per phase, the FLOPs of a step, the corrections' achieved
FLOP/s and the probe's share of the wall time (the summary's `phases`, the same keys on every path)."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from sweep.outputs import Status
from sweep.run.results import Finished
from sweep.training.flops import StepCost

PHASES = ("search", "probe", "corrections", "statistics", "figures")


class Phases:
    """Accumulates one job's phase times. The probe runs inside the training (at each example's
    stopping weights), so its time is taken from the examples' own probe seconds and the rest of the
    training's wall time is the corrections'. With worker processes side by side, the probe's wall
    time is its summed seconds divided by the workers."""

    def __init__(self, cost: StepCost):
        self.cost = cost
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.probe_in_training = self.correction_flops = self.probe_images = 0.0

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - tick

    def finished(self, result: Finished) -> None:
        """Count an example this process finished: its correction's FLOPs and its probe's time."""
        updates = result.row["updates"]
        if result.row["status"] != Status.UNREADABLE:
            self.correction_flops += self.cost.correction_flops(updates)
        self.probe_in_training += result.probe_seconds
        self.probe_images += result.row.get("probe_images") or 0

    def training(self, seconds: float, workers: int) -> None:
        """The training's wall time, split between the probe and the corrections."""
        probe = min(seconds, self.probe_in_training / workers)
        self.seconds["probe"] += probe
        self.seconds["corrections"] += seconds - probe

    def summary(self, wall_seconds: float) -> dict:
        """The summary's `phases` of a job that took `wall_seconds` in all."""
        corrections = self.seconds["corrections"]
        return {**{f"{phase}_seconds": seconds for phase, seconds in self.seconds.items()},
                "forward_flops": self.cost.forward_flops, "update_flops": self.cost.update_flops,
                "correction_flops": self.correction_flops,
                "correction_flops_per_second": self.correction_flops / corrections if corrections > 0 else None,
                "probe_flops_after": self.probe_images * self.cost.forward_flops,
                "probe_share": self.seconds["probe"] / wall_seconds if wall_seconds > 0 else None}

    @staticmethod
    def sentence(phases: dict, wall: float) -> str:
        """The log's last line: where the wall time went."""
        parts = ", ".join(f"{phase} {phases[f'{phase}_seconds']:.1f} s" for phase in PHASES)
        rate = phases["correction_flops_per_second"]
        speed = f"; corrections at {rate / 1e9:.1f} GFLOP/s" if rate else ""
        share = phases["probe_share"]
        probe = f"the probe took {100 * share:.0f}% of it" if share is not None else "no probe"
        return f"wall time {wall:.1f} s, {probe} ({parts}{speed})"
