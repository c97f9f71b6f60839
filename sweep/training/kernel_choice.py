"""Each convolution of the batched engine on its fastest kernel: the model's distinct convolution shapes
are found in one forward pass, every formulation of `sweep.training.conv_kernels` is timed on each
(forward and backward of K copies, as the engine computes them), and the fastest is taken. Timings
are cached per device, torch version, precision and K, layer shape by layer shape, so that the next
run (of any model with that shape) does not time again. A formulation whose gradients stray from
vmap's own beyond rounding is never taken.

`execution.kernels`: `auto` (the fastest, timed), `exact` (vmap's grouped convolution everywhere: each copy sums
as one example does), or one formulation for every layer it applies to.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.overrides import TorchFunctionMode

from sweep.config import Kernels
from sweep.files import atomic_write_text
from sweep.training.conv_kernels import GROUPED, ChosenConv, ConvSpec, candidates
from sweep.training.hardware import device_name, synchronize

log = logging.getLogger(__name__)

_CONV_ARGUMENTS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
STRAY = {torch.float32: 1e-4, torch.float16: 5e-3}  # a formulation's largest difference from vmap's own, relative
MODEL_STRAY = 1e-3  # the same for a whole model's fp32 step (sweep.training.engine: BatchedTrainer.use_kernels)
# another order of summation moved steps in fp16 beyond the kernels' tolerance (sweep.tolerance.KERNELS), and
# formulations that matched vmap's own bit for bit on random inputs still changed the original preset's loss sums
FP16_AUTO = "fp16: vmap's own convolutions, the only ones that compute each copy as one example does"
FP16_ACCURACY = 2.0  # a model's fp16 gradients on the chosen kernels: at most this times vmap's own error from fp32
REPEATS = 3


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


@dataclass(frozen=True)
class ConvLayer:
    """One convolution shape of a model: one example's input (N, C, H, W), the weight, the settings."""
    input: tuple[int, ...]
    weight: tuple[int, ...]
    spec: ConvSpec

    @staticmethod
    def of_call(args: tuple, kwargs: dict) -> Optional[tuple[ConvLayer, dict]]:
        """The layer of an F.conv2d call and its named arguments; None for string padding ('same')."""
        named = {**_CONV_DEFAULTS, **dict(zip(_CONV_ARGUMENTS, args, strict=False)), **kwargs}
        if isinstance(named["padding"], str):
            return None
        spec = ConvSpec(_pair(named["stride"]), _pair(named["padding"]), _pair(named["dilation"]), named["groups"])
        return ConvLayer(tuple(named["input"].shape), tuple(named["weight"].shape), spec), named

    @property
    def kind(self) -> str:
        """The layer's class: '1x1 conv', '3x3 conv', '3x3 depthwise', '3x3 grouped'."""
        out, per_group, kh, kw = self.weight
        groups = self.spec.groups
        kind = "conv" if groups == 1 else "depthwise" if per_group == 1 and out == groups else "grouped"
        return f"{kh}x{kw} {kind}"

    @property
    def key(self) -> str:
        s = self.spec
        return (f"{self.kind} {self.input[1]}->{self.weight[0]} at {self.input[2]}x{self.input[3]} (batch "
                f"{self.input[0]}), stride {s.stride}, padding {s.padding}, dilation {s.dilation}, groups {s.groups}")


class ChosenKernels(TorchFunctionMode):
    """While active (inside the engine's vmap), each convolution runs on its layer's chosen formulation;
    layers without a choice, or chosen `grouped`, run vmap's own rule."""

    def __init__(self, chosen: dict[ConvLayer, str]):
        super().__init__()
        self.chosen = chosen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            found = ConvLayer.of_call(args, kwargs)
            if found is not None:
                layer, named = found
                name = self.chosen.get(layer, GROUPED)
                if name != GROUPED:
                    return ChosenConv.apply(named["input"], named["weight"], named["bias"], layer.spec, name)
        return func(*args, **kwargs)


class _Recorder(TorchFunctionMode):
    """Counts the convolution layers a forward pass calls, by shape, in order."""

    def __init__(self):
        super().__init__()
        self.layers: Counter[ConvLayer] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            found = ConvLayer.of_call(args, kwargs)
            if found is not None:
                self.layers[found[0]] += 1
        return func(*args, **kwargs)


def conv_layers(model: nn.Module, weights: dict, input_size: tuple[int, ...],
                device: torch.device) -> dict[ConvLayer, int]:
    """The model's convolution shapes for one example of `input_size`, and how many layers have each."""
    recorder = _Recorder()
    with torch.no_grad(), recorder:
        functional_call(model, weights, (torch.zeros(1, *input_size, device=device),))
    return dict(recorder.layers)


def _layer_step(layer: ConvLayer, name: str):
    """The K copies' outputs and input and weight gradients of one layer (the engine's vmap of grad), by `name`."""
    def loss(x, weight, out_grad):
        out = layer.spec.call(x, weight) if name == GROUPED else ChosenConv.apply(x, weight, None, layer.spec, name)
        return (out * out_grad).sum(), out
    return vmap(grad(loss, argnums=(0, 1), has_aux=True))


def time_layer(layer: ConvLayer, k: int, device: torch.device, dtype: torch.dtype) -> dict:
    """{"ms": milliseconds per step of each formulation on this layer (best of REPEATS after a warm-up),
    None for one whose output or gradients stray from vmap's own (or that fails, or all when vmap's own
    fails: nothing to compare with)}."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(k, *layer.input, generator=generator).to(device, dtype)
    weight = (torch.randn(k, *layer.weight, generator=generator) * 0.1).to(device, dtype)
    with torch.no_grad():
        out_shape = layer.spec.call(x[0], weight[0]).shape
    out_grad = torch.randn(k, *out_shape, generator=generator).to(device, dtype)
    reference, times = None, {}
    for name in candidates(device.type):
        step = _layer_step(layer, name)
        try:
            result = step(x, weight, out_grad)
        except RuntimeError as error:
            log.debug("kernel %s on %s: %s", name, layer.key, error)
            if name == GROUPED:
                return {"ms": dict.fromkeys(candidates(device.type))}
            times[name] = None
            continue
        reference = reference or result
        flat, expected = (*result[0], result[1]), (*reference[0], reference[1])
        if not all(_close(a, b, STRAY[dtype]) for a, b in zip(flat, expected, strict=True)):
            times[name] = None
            continue
        best = float("inf")
        for _ in range(REPEATS):
            synchronize(device)
            start = time.perf_counter()
            step(x, weight, out_grad)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
        times[name] = round(best * 1e3, 4)
    return {"ms": times}


def _close(a: torch.Tensor, b: torch.Tensor, relative: float) -> bool:
    scale = b.float().abs().max().clamp(min=1e-12)
    return bool(((a.float() - b.float()).abs().max() / scale) <= relative)


@dataclass
class KernelChoice:
    """Which formulation each convolution layer runs, and why: the setting, and the timings."""
    setting: Kernels
    layers: dict[ConvLayer, int]  # the model's convolution shapes, and how many layers have each
    chosen: dict[ConvLayer, str] = field(default_factory=dict)
    timings: dict[ConvLayer, dict] = field(default_factory=dict)
    timed: int = 0  # shapes timed in this run (the others came from the cache)
    seconds: float = 0.0
    why: Optional[str] = None  # why the setting's kernels were not used

    def refused(self, why: str) -> KernelChoice:
        """vmap's own convolutions for every layer instead, and why."""
        return dataclasses.replace(self, chosen=dict.fromkeys(self.chosen, GROUPED), why=why)

    def differs(self) -> bool:
        """Whether any layer runs on another formulation than vmap's own."""
        return any(name != GROUPED for name in self.chosen.values())

    def by_class(self) -> dict[str, dict[str, int]]:
        """Per layer class, how many of its shapes run on each formulation."""
        counts: dict[str, Counter] = {}
        for layer, name in self.chosen.items():
            counts.setdefault(layer.kind, Counter())[name] += 1
        return {kind: dict(count) for kind, count in counts.items()}

    def ms_by_class(self) -> dict[str, float]:
        """Per layer class, the timed milliseconds of one step of all its layers on their chosen kernels
        (where the convolutions' time goes; empty unless timed)."""
        ms: Counter[str] = Counter()
        for layer, name in self.chosen.items():
            timed = self.timings.get(layer, {}).get("ms", {}).get(name)
            if timed is not None:
                ms[layer.kind] += self.layers[layer] * timed
        return {kind: round(value, 3) for kind, value in ms.most_common()}

    def summary(self) -> dict:
        return {"setting": self.setting.value, "by_class": self.by_class(), "ms_by_class": self.ms_by_class(),
                "timed_shapes": self.timed, "search_seconds": round(self.seconds, 2), "why": self.why,
                "shapes": [{"layer": layer.key, "layers": self.layers[layer], "kernel": name,
                            **self.timings.get(layer, {})} for layer, name in self.chosen.items()]}

    def describe(self) -> str:
        if self.why is not None:
            return f"kernels: exact ({self.why})"
        if self.setting == Kernels.exact:
            return "kernels: exact (vmap's grouped convolutions)"
        classes = "; ".join(f"{kind}: " + ", ".join(f"{name} {n}" for name, n in sorted(kernels.items()))
                            for kind, kernels in self.by_class().items())
        return f"kernels: {self.setting.value} ({classes})"


def _fastest(timing: dict) -> str:
    """The fastest formulation of a layer's timing."""
    timed = {name: t for name, t in timing["ms"].items() if t is not None}
    return min(timed, key=timed.get) if timed else GROUPED


class KernelCache:
    """Timings per layer shape, in one JSON file per device (on a CPU, and torch thread count), torch
    version, precision and K."""

    def __init__(self, root: Path, device: torch.device, dtype: torch.dtype, k: int, threads: int):
        name = "".join(c if c.isalnum() else "_" for c in device_name(device))
        name += f"-{threads}threads" if device.type == "cpu" else ""
        self.path = root / "kernels" / f"{name}-torch{torch.__version__}-{str(dtype)[6:]}-K{k}.json"

    def read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def add(self, timings: dict[str, dict]) -> None:
        """Merge `timings` into the file (re-read first: another job may have written meanwhile)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({**self.read(), **timings}, indent=1, sort_keys=True))


def choose_kernels(setting: Kernels, layers: dict[ConvLayer, int], k: int, device: torch.device, dtype: torch.dtype,
                   cache: Optional[KernelCache]) -> KernelChoice:
    """The formulation of each convolution shape in `layers` (as `conv_layers` counts them) for `setting`
    (timing the shapes the cache does not know for `auto`). In fp16 `auto` keeps vmap's own (FP16_AUTO)."""
    choice = KernelChoice(setting, layers)
    if setting != Kernels.auto:
        name = GROUPED if setting == Kernels.exact else setting.value
        choice.chosen = dict.fromkeys(layers, name)
        return choice
    if dtype == torch.float16:
        choice.chosen, choice.why = dict.fromkeys(layers, GROUPED), FP16_AUTO
        return choice
    start = time.perf_counter()
    known = cache.read() if cache is not None else {}
    new = {}
    for layer in layers:
        timing = known.get(layer.key)
        if not isinstance(timing, dict) or "ms" not in timing:
            timing = new[layer.key] = time_layer(layer, k, device, dtype)
        choice.timings[layer], choice.chosen[layer] = timing, _fastest(timing)
    if new and cache is not None:
        cache.add(new)
    choice.timed, choice.seconds = len(new), time.perf_counter() - start
    log.info("%s (%d convolution shapes timed, %.1f s; %d from %s)", choice.describe(), len(new), choice.seconds,
             len(layers) - len(new), cache.path if cache else "no cache")
    return choice
