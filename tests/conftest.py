import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MKL_CBWR", "AUTO")  # as main.py sets it: runs repeat bit for bit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers.configs import SHARED_DATA, TINY_UNIVERSE  # noqa: E402

os.environ.setdefault("LTC_SHARED_DATA", str(SHARED_DATA))  # for data=imagenet_sample (tests/conf)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the whole session (or $LTC_CACHE_DIR, to reuse a default universe built before)."""
    return Path(os.environ.get("LTC_CACHE_DIR") or tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def mistakes(cache_dir):
    """The tiny universe's pretrained model and 10 of its real mistakes: (model, [(x of shape (C, H, W), label)])."""
    from sweep.demo import demo_mistakes, open_demo
    model, chosen = demo_mistakes(open_demo(dict(TINY_UNIVERSE), cache_dir), "test_resnet", 10)
    return model, [(x, y) for x, y, _ in chosen]
