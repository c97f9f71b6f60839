"""How many mistakes a run draws: `sample_size`, or with `sample_size=auto` (the default) by a rule that
the run states on its first lines and records in its summary, so that a sweep over models of very
different cost says so rather than comparing unlike samples silently."""
from __future__ import annotations

from sweep.config import AUTO, Config

DEFAULT = 200      # the demo: rho against rank within about ±0.13
LARGE_SAMPLE = 50  # a large model on the demo universe
LARGE_MODEL = 2e6  # parameters: on a CPU such a model's corrections cost ten times the demo's own models' and more


def sample_size_of(cfg: Config) -> tuple[int, str]:
    """(the number of mistakes `cfg`'s run draws, the rule that says so)."""
    if cfg.sample_size != AUTO:
        return int(cfg.sample_size), f"sample_size={cfg.sample_size}"
    if cfg.data.name != "demo":
        return DEFAULT, f"sample_size=auto: {DEFAULT}"
    from sweep.data.universe.shapes import CLASSES
    from sweep.models import parameter_count
    parameters = parameter_count(cfg.model.arch, len(CLASSES))
    if parameters <= LARGE_MODEL:
        return DEFAULT, f"sample_size=auto: {DEFAULT}"
    return LARGE_SAMPLE, (f"sample_size=auto: {LARGE_SAMPLE}, as for every model of more than "
                          f"{LARGE_MODEL / 1e6:.0f}M parameters on the demo universe ({cfg.model.arch} has "
                          f"{parameters / 1e6:.1f}M, and its corrections cost ten times the demo's own models' and "
                          f"more on a CPU); sample_size={DEFAULT} draws the default's")
