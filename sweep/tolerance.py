"""How far two runs' rows of the same examples agree, against a tolerance: used where the rounding of
the arithmetic differs between them (another device, another convolution kernel), so that a loop near
a decision may go either way."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pandas as pd


@dataclass(frozen=True)
class Tolerance:
    """Every status equal, at least `same_steps` of the examples taking equal steps (`updates`), none
    off by more than `step_gap` (None: any), and the loss sums within `loss_rtol` where steps are equal."""
    same_steps: float
    loss_rtol: float
    step_gap: Optional[int] = None

    def steps_within(self, steps_equal: float, largest_step_gap: int) -> bool:
        """Whether steps equal in this share of the examples, none further apart than this, are within."""
        return steps_equal >= self.same_steps and (self.step_gap is None or largest_step_gap <= self.step_gap)


DEVICES = Tolerance(same_steps=0.9, loss_rtol=1e-3)  # a GPU's rows against a CPU's
KERNELS = Tolerance(same_steps=0.99, loss_rtol=1e-3, step_gap=1)  # faster convolution kernels against exact ones


@dataclass(frozen=True)
class Agreement:
    examples: int
    status_equal: float
    steps_equal: float
    largest_step_gap: int
    loss_rel_difference: float  # the largest, where steps are equal
    tolerance: Tolerance

    @property
    def ok(self) -> bool:
        return (self.status_equal == 1 and self.tolerance.steps_within(self.steps_equal, self.largest_step_gap)
                and self.loss_rel_difference <= self.tolerance.loss_rtol)

    def describe(self) -> str:
        t = self.tolerance
        gap = f", none off by more than {t.step_gap}" if t.step_gap is not None else ""
        return (f"{self.examples} examples: status equal {self.status_equal:.0%}, steps equal {self.steps_equal:.1%} "
                f"(largest gap {self.largest_step_gap}), loss_sum max rel. difference {self.loss_rel_difference:.1e} "
                f"(tolerance: 100%, {t.same_steps:.0%}{gap}, {t.loss_rtol:g})")


def agreement(rows: pd.DataFrame, reference: pd.DataFrame, tolerance: Tolerance, key: str = "path") -> Agreement:
    """`rows` against `reference` (results tables with `status`, `updates` and `loss_sum`), matched on `key`."""
    rows, reference = rows.set_index(key), reference.set_index(key)
    if set(rows.index) != set(reference.index):
        raise ValueError(f"the two runs hold different examples ({len(rows)} and {len(reference)} rows)")
    reference = reference.loc[rows.index]
    equal = rows["updates"] == reference["updates"]
    difference = (rows["loss_sum"] - reference["loss_sum"]).abs() / reference["loss_sum"].abs().clip(lower=1e-12)
    return Agreement(examples=len(rows), status_equal=float((rows["status"] == reference["status"]).mean()),
                     steps_equal=float(equal.mean()),
                     largest_step_gap=int((rows["updates"] - reference["updates"]).abs().max()),
                     loss_rel_difference=float(difference[equal].max()) if equal.any() else 0.0,
                     tolerance=tolerance)
