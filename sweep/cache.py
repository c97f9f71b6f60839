"""Where built artifacts are cached: the demo universe, its pretrained weights, wrong sets."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def cache_root(cache_dir: Optional[str]) -> Path:
    """`cache_dir`, else $LTC_CACHE_DIR, else $XDG_CACHE_HOME/loss-to-correct, else ~/.cache/loss-to-correct."""
    chosen = (cache_dir or os.environ.get("LTC_CACHE_DIR")
              or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "loss-to-correct")
    return Path(chosen).expanduser()
