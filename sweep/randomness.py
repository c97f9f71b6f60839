"""Per-example random streams. Every random draw an example's loop makes (the augmentation of its
view, dropout and drop-path in train mode) comes from generators seeded by the run seed and the
image path, so an example's row does not depend on which examples ran before it, in which order,
on which execution path, or where a run resumed."""
from __future__ import annotations

import contextlib
import random
import zlib
from collections.abc import Iterator
from typing import Optional

import torch


def view_seed(run_seed: int, path: str) -> int:
    """The seed of an example's random training view."""
    return run_seed * 1_000_003 + zlib.crc32(path.encode())


def forward_seed(run_seed: int, path: str) -> int:
    """The seed of the randomness in an example's forward passes (dropout, drop-path in train mode)."""
    return zlib.crc32(f"forward/{run_seed}/{path}".encode())


def probe_offset(path: str) -> int:
    """Where in the probe set an example's images start, with probe.size=auto (any modulus of it)."""
    return zlib.crc32(f"probe/{path}".encode())


@contextlib.contextmanager
def seeded(seed: int, device: Optional[torch.device] = None) -> Iterator[None]:
    """Python's and torch's generators (the CPU's, and `device`'s when it is a GPU) seeded with
    `seed` inside the block, and restored after it, so that nothing outside sees the draws."""
    devices = [device] if device is not None and device.type == "cuda" else []
    state = random.getstate()
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(state)
