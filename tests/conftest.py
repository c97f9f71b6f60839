import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

# Small enough to build in seconds; used wherever a test needs a real universe but not the default one.
TINY_UNIVERSE = {"seed": 0, "image_size": 32, "n_train": 600, "n_val": 200, "zoo_archs": ["test_resnet", "test_vit"],
                 "zoo_epochs": [1, 2], "pretrain_epochs": 2}


def compose_config(*overrides: str):
    """The project's config as `python main.py <overrides>` would compose it (no Hydra run)."""
    from hydra import compose, initialize_config_dir
    from sweep.config import register_configs
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def tiny_universe_overrides(cache_dir: Path) -> list[str]:
    u = TINY_UNIVERSE
    return [f"cache_dir={cache_dir}", f"data.universe.n_train={u['n_train']}", f"data.universe.n_val={u['n_val']}",
            f"data.universe.zoo_archs=[{','.join(u['zoo_archs'])}]",
            f"data.universe.zoo_epochs=[{','.join(map(str, u['zoo_epochs']))}]",
            f"data.universe.pretrain_epochs={u['pretrain_epochs']}"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the whole session (or $LTC_CACHE_DIR, to reuse a default universe built before)."""
    return Path(os.environ.get("LTC_CACHE_DIR") or tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def mistakes(cache_dir):
    """A pretrained tiny model and 10 of its real mistakes: [(x of shape (C, H, W), label)]."""
    import torch
    from sweep.data import load_image, model_transform, read_examples
    from sweep.models import load_checkpoint
    from sweep.selection import find_wrong, sample
    from sweep.universe.build import build_universe, pretrained_weights

    universe = build_universe(dict(TINY_UNIVERSE), cache_dir)
    model = load_checkpoint(universe.new_model("test_resnet"),
                            pretrained_weights(universe, "test_resnet", TINY_UNIVERSE["pretrain_epochs"], 0))
    transform = model_transform(model, training=False)
    examples = read_examples(universe.images_root, universe.labels_csv, universe.difficulty_csv)
    wrong, _ = find_wrong(model.eval(), examples, lambda e: transform(load_image(e.path)), torch.device("cpu"),
                          64, progress=False)
    return model, [(transform(load_image(e.path)), e.label) for e in sample(wrong, 10, seed=0)]
