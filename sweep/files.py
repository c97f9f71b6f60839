"""Files written safely, shared by everything that writes state: replaced atomically."""
from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` at once: readers see the old file or the new one, never a part."""
    staging = Path(f"{path}.partial")
    staging.write_text(text)
    os.replace(staging, path)

