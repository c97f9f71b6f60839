"""foolbox's 20 real labelled ImageNet images (a test requirement), with a labels CSV for them."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest


def foolbox_images(tmp_path: Path) -> tuple[Path, Path]:
    """(the images' folder, a labels CSV of them written in `tmp_path`); the test is skipped without foolbox."""
    if importlib.util.find_spec("foolbox") is None:
        pytest.skip("foolbox (its 20 bundled ImageNet images) not installed: pip install -r requirements-test.txt")
    data = Path(importlib.util.find_spec("foolbox").submodule_search_locations[0]) / "data"
    files = sorted(f.name for f in data.glob("imagenet_*.jpg"))
    labels = tmp_path / "l.csv"
    pd.DataFrame({"file": files, "label": [int(f[:-4].split("_")[-1]) for f in files]}).to_csv(labels, index=False)
    return data, labels
