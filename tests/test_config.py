"""Config composition: every group option composes, and bad keys or values fail with a clear message."""
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import compose_config
from sweep.config import ModelMode, Optimizer
from sweep.run import validate

CONF = Path(__file__).resolve().parents[1] / "conf"


def group_options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_defaults_follow_the_design():
    cfg = compose_config()
    assert cfg.model.arch == "test_resnet" and cfg.data.name == "demo"
    assert cfg.train.optimizer == Optimizer.adamw and cfg.train.weight_decay == 0.0
    assert cfg.train.mode == ModelMode.eval and cfg.train.augmentation.value == "none"
    assert cfg.train.precision.value == "fp32"
    assert OmegaConf.is_missing(cfg.model, "checkpoint") is False and cfg.model.checkpoint is None


@pytest.mark.parametrize("model", group_options("model"))
def test_every_model_option_composes(model):
    cfg = compose_config(f"model={model}")
    assert cfg.model.arch.endswith(model)  # efficientnet_lite0 is timm's tf_efficientnet_lite0
    validate(cfg)


@pytest.mark.parametrize("data", group_options("data"))
def test_every_data_option_composes(data):
    assert data.startswith(compose_config(f"data={data}").data.name)


@pytest.mark.parametrize("override, expected", [
    ("lrr=1e-3", "lrr"),                        # typo in a key
    ("train.optimiser=sgd", "optimiser"),
    ("lr=fast", "lr"),                          # wrong type
    ("max_steps=1.5", "max_steps"),
    ("train.optimizer=adamx", "adamx"),          # not an allowed value
    ("train.mode=training", "training"),
    ("model=resnet9000", "resnet9000"),          # no such config group option
])
def test_bad_overrides_fail_naming_the_key_or_value(override, expected):
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)) as error:
        compose_config(override)
    assert expected in str(error.value) + str(error.value.__cause__)


@pytest.mark.parametrize("override, expected", [
    ("lr=0", "lr=0"), ("lr=-1e-5", "lr=-1e-05"), ("max_steps=0", "max_steps=0"), ("sample_size=0", "sample_size=0")])
def test_impossible_values_fail_before_work(override, expected):
    with pytest.raises(ValueError, match=expected):
        validate(compose_config(override))
