"""Where built artifacts are cached (demo universe, its pretrained weights)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def cache_root(cache_dir: Optional[str]) -> Path:
    """`cache_dir`, else $LTC_CACHE_DIR, else ~/.cache/loss-to-correct."""
    chosen = cache_dir or os.environ.get("LTC_CACHE_DIR") or Path.home() / ".cache" / "loss-to-correct"
    return Path(chosen).expanduser()
