"""Compose the project's config as the command line would, with small settings for fast tests."""
from __future__ import annotations

from pathlib import Path

from sweep.config import register_configs

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
ORIGINAL = SHARED_DATA / "original"
SAMPLE = SHARED_DATA / "imagenet-val-sample"
TEST_CONF = ROOT / "tests" / "conf"

# Small enough to build in seconds; used wherever a test needs a real universe but not the default one.
TINY_UNIVERSE = {"seed": 0, "image_size": 32, "n_train": 600, "n_val": 200,
                 "zoo_archs": ["test_resnet", "test_efficientnet"], "zoo_epochs": [4, 8], "pretrain_epochs": 2}


def on_cpu(overrides) -> list[str]:
    """The tests are calibrated on CPUs (thread counts, workers): they run there unless they name a device."""
    overrides = list(overrides)
    if any(o.startswith("execution.device=") for o in overrides) or "--help" in overrides:
        return overrides
    return [*overrides, "execution.device=cpu"]


def compose_config(*overrides: str):
    """The config `python main.py <overrides>` would run with (no Hydra run, no output directory)."""
    from hydra import compose, initialize_config_dir
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[f"hydra.searchpath=[file://{TEST_CONF}]", *on_cpu(overrides)])


def tiny_universe_overrides(cache_dir: Path) -> list[str]:
    u = TINY_UNIVERSE
    return [f"cache_dir={cache_dir}", f"data.universe.n_train={u['n_train']}", f"data.universe.n_val={u['n_val']}",
            f"data.universe.zoo_archs=[{','.join(u['zoo_archs'])}]",
            f"data.universe.zoo_epochs=[{','.join(map(str, u['zoo_epochs']))}]",
            f"data.universe.pretrain_epochs={u['pretrain_epochs']}"]


def sample_overrides() -> list[str]:
    """data=imagenet_sample: the 300 ImageNet validation images of the development data."""
    return [f"hydra.searchpath=[file://{TEST_CONF}]", "data=imagenet_sample"]
