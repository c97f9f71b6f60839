"""The original scripts' draw of a sample from a pool of mistakes, and what a run's draw yields (a
Selection). Torch-free: the sweep's shared selection draws in the launching process."""
from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from sweep.data.examples import Example

log = logging.getLogger(__name__)


@dataclass
class Selection:
    """What a run corrects: its sample of mistakes, with what the search found of each."""
    examples: list[Example]           # the sampled wrong examples, easiest first
    initial_losses: dict[str, float]  # path -> loss at the pretrained weights, where the search computed it
    info: dict                        # counts: examples, wrong, unreadable, selected
    predictions: dict[str, int] = field(default_factory=dict)  # path -> the prediction that made it a mistake


def rank_order(examples: Iterable[Example]) -> list[Example]:
    """Examples easiest first (ties, which a ranking does not have, by path)."""
    return sorted(examples, key=lambda e: (e.rank, e.path))


def sample(pool: list[Example], sample_size: int, seed: int) -> list[Example]:
    """The original scripts' draw: `random.Random(seed).sample(pool, sample_size)` when the pool is
    larger, else all of it; then ordered by difficulty, easiest first.

    The pool's order is part of the draw: matrix-column order for a wrong set from a correctness
    matrix (as the original), else rank order. So the draw depends only on the wrong set,
    `sample_size` and `seed`, and runs that differ in lr or max_steps see the same examples.
    """
    if sample_size >= len(pool):
        if sample_size > len(pool):
            log.warning("sample_size=%d but only %d wrong examples: taking all of them", sample_size, len(pool))
        chosen = list(pool)
    else:
        chosen = random.Random(seed).sample(pool, sample_size)
    return sorted(chosen, key=lambda e: e.rank)
