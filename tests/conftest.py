import os
import tempfile
from pathlib import Path

import pytest

from helpers.configs import SHARED_DATA, TINY_UNIVERSE
from sweep.cli import prepare_process

prepare_process()  # as main.py: reproducible MKL results, cuBLAS workspace for deterministic GPU runs

os.environ.setdefault("LTC_SHARED_DATA", str(SHARED_DATA))  # for data=imagenet_sample (tests/conf)
# Every cache the tests fill (universes, weights, wrong sets) in one fresh folder, subprocesses
# included, unless LTC_CACHE_DIR names one (to reuse a default universe built before).
os.environ.setdefault("LTC_CACHE_DIR", tempfile.mkdtemp(prefix="ltc-test-cache-"))


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none visible)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The session's cache (see LTC_CACHE_DIR above)."""
    return Path(os.environ["LTC_CACHE_DIR"])


@pytest.fixture(scope="module")
def mistakes(cache_dir):
    """The tiny universe's pretrained model and 10 of its real mistakes: (model, [(x of shape (C, H, W), label)])."""
    from helpers.mistakes import demo_mistakes
    from sweep.data.demo import open_demo
    model, chosen = demo_mistakes(open_demo(dict(TINY_UNIVERSE), cache_dir), "test_resnet", 10)
    return model, [(x, y) for x, y, _ in chosen]
