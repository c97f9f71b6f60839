"""Config composition: every group option composes, bad keys or values fail with a clear message,
and the command line answers user mistakes with one `error:` block and exit status 2."""
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from helpers.commands import run_main
from helpers.configs import ROOT, compose_config
from sweep.config import ModelMode, Optimizer, validate
from sweep.errors import UserError

CONF = ROOT / "conf"


def group_options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_defaults_are_deterministic_eval_mode_adamw():
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
def test_every_data_option_composes_with_its_own_schema(data):
    cfg = compose_config(f"data={data}")
    assert cfg.data.name == data
    other = "universe" if data == "imagenet" else "images"  # each option holds only its own keys
    with pytest.raises(ConfigCompositionException):
        compose_config(f"data={data}", f"data.{other}=x")


def test_presets_need_no_plus():
    cfg = compose_config("experiment=original")
    assert cfg.train.mode == ModelMode.train and cfg.seed == 42


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
    with pytest.raises(UserError, match=expected):
        validate(compose_config(override))


def test_help_says_what_the_tool_does_and_lists_only_real_options():
    out = run_main("--help").stdout
    assert "fine-tune it on that one image until it is classified" in out
    assert "model: efficientnet_lite0, efficientnet_lite1" in out and "data: demo, imagenet" in out
    assert "schema" not in out.split("== Config ==")[0]


@pytest.mark.parametrize("args, expected", [
    (["lr=-1"], "error: lr=-1.0: expected a finite learning rate > 0"),
    (["model=resnet50"], "error: model=resnet50: no such option (options: efficientnet_lite0"),
    (["lr=abc"], "error: Error merging override lr=abc"),
])
def test_user_mistakes_print_one_error_block_and_exit_2(tmp_path, args, expected):
    result = run_main(*args, f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_the_original_machine_s_image_root_comes_with_the_original_preset_on_imagenet_only():
    """The schema holds no machine path: experiment=original brings the original's image root to
    data=imagenet (data.prefix, which a user's value overrides), and composes with the demo data too."""
    imagenet = ["data=imagenet", "data.images=/x", "data.difficulty=/y.csv"]
    assert compose_config(*imagenet).data.prefix is None
    assert compose_config("experiment=original", *imagenet).data.prefix == "/home/projects/bagon/shared/imagenet512/val"
    assert compose_config("experiment=original", *imagenet, "data.prefix=/z").data.prefix == "/z"
    assert compose_config("experiment=original").data.name == "demo"
