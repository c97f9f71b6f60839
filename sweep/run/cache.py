"""Where built artifacts are cached: the demo universe, its pretrained weights, wrong sets."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from sweep.errors import UserError


def cache_root(cache_dir: Optional[str]) -> Path:
    """`cache_dir`, else $LTC_CACHE_DIR, else $XDG_CACHE_HOME/loss-to-correct, else ~/.cache/loss-to-correct."""
    chosen = (cache_dir or os.environ.get("LTC_CACHE_DIR")
              or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "loss-to-correct")
    return Path(chosen).expanduser()


def writable_cache(cache_dir: Optional[str]) -> Path:
    """`cache_root(cache_dir)`, created if missing; one that cannot be created or written is a user
    error naming where its location came from, before any work is cached there."""
    root = cache_root(cache_dir)
    where = ("cache_dir" if cache_dir else "$LTC_CACHE_DIR" if os.environ.get("LTC_CACHE_DIR")
             else "the default cache location")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{where} {root}: cannot create it ({error.strerror}); "
                        f"set cache_dir=<a writable directory>") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"{where} {root}: not writable; set cache_dir=<a writable directory>")
    return root
