"""The hardware a job runs on: its device (a claimed GPU or the CPU), the cores it was given, the
weights' memory layout, and what makes fp32 arithmetic exact and repeatable there."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from torch import nn

from sweep.config import Device, MemoryFormat, Precision
from sweep.errors import UserError

log = logging.getLogger(__name__)
@contextlib.contextmanager
def claimed_device(choice: Device, job_num: int) -> Iterator[torch.device]:
    """CPU, or a GPU this job claims for the block. With several visible GPUs, parallel jobs on one
    machine each claim a free one (a lock file per GPU, released when the block ends, so that the
    next job of a sequential sweep finds it free), starting at job number modulo count; the choice
    is logged."""
    if choice == Device.cuda and not torch.cuda.is_available():
        raise UserError("execution.device=cuda but no CUDA device is available; use execution.device=auto or cpu")
    lock = None
    if choice == Device.cpu or not torch.cuda.is_available():
        device = torch.device("cpu")
    else:
        index, lock = _claim_gpu(job_num)
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    log.info("device: %s (%s)%s", device, device_name(device),
             ", chosen by execution.device=auto" if choice == Device.auto else "")
    try:
        yield device
    finally:
        if lock is not None:
            lock.release()


def _claim_gpu(job_num: int) -> tuple[int, FileLock | None]:
    """The first GPU, from `job_num` on, that no other job of this machine holds, and its held lock."""
    count = torch.cuda.device_count()
    if count == 1:
        return 0, None
    for offset in range(count):
        index = (job_num + offset) % count
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        lock = FileLock(str(Path(tempfile.gettempdir()) / f"loss-to-correct-gpu-{uuid}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        return index, lock
    log.warning("all %d GPUs are held by other jobs: sharing GPU %d", count, job_num % count)
    return job_num % count, None


def exact_arithmetic(device: torch.device, precision: Precision) -> None:
    """fp32 on a GPU as on a CPU: no TF32 in matmuls and convolutions, deterministic cuDNN
    algorithms, and torch's deterministic algorithms (an operation without one warns)."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    if precision == Precision.fp32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")


_NONDETERMINISTIC = re.compile(r"^(?P<operation>.+?) does not have a deterministic implementation")


@contextlib.contextmanager
def nondeterministic_operations():
    """Collect the operations that warned, while the block ran, that they have no deterministic
    implementation (GPU runs use torch's deterministic algorithms with `warn_only`, so that such an
    operation runs and says so rather than stopping the job): yields a list the summary records,
    first warnings first, each once, and each shown once. Per block, not per process: Python shows
    a warning once per call site, so without resetting that here a second job in the same process
    (a sequential multirun) would record nothing."""
    seen: list[str] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("always", message=_NONDETERMINISTIC.pattern[1:])  # resets the once-per-site memory
        show = warnings.showwarning

        def record(message, category, filename, lineno, file=None, line=None):
            match = _NONDETERMINISTIC.match(str(message))
            if match is None:
                show(message, category, filename, lineno, file, line)
            elif match["operation"] not in seen:
                seen.append(match["operation"])
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = record
        yield seen


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU's), so that a clock read after it times that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def describe(device: torch.device) -> dict:
    """For the summary: the device and the arithmetic settings in force (CUDA and cuDNN versions among them)."""
    out = {"device": str(device), "device_name": device_name(device), "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
           "mkl_cbwr": os.environ.get("MKL_CBWR")}
    if device.type == "cuda":
        out.update({"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                    "cudnn_deterministic": torch.backends.cudnn.deterministic,
                    "cudnn_benchmark": torch.backends.cudnn.benchmark,
                    "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")})
    return out


def memory_format(setting: MemoryFormat, model: nn.Module, device: torch.device) -> tuple[MemoryFormat, str]:
    """The weight layout for `execution.memory_format`, and why. `auto` takes channels_last on a CPU
    for a model with depthwise convolutions, which oneDNN's depthwise kernels run faster in it, and
    torch's default layout elsewhere (the measurements: benchmarks/README.md, "What `auto` chooses").
    Float results depend on the layout, not on the path."""
    if setting != MemoryFormat.auto:
        return setting, f"execution.memory_format={setting.value}"
    depthwise = any(isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels for m in model.modules())
    if not depthwise:
        return MemoryFormat.contiguous, "auto: no depthwise convolutions"
    if device.type != "cpu":
        return MemoryFormat.contiguous, "auto: depthwise convolutions, on a GPU"
    return MemoryFormat.channels_last, "auto: depthwise convolutions on a CPU"


def torch_format(layout: MemoryFormat) -> torch.memory_format:
    return torch.channels_last if layout == MemoryFormat.channels_last else torch.contiguous_format


def with_memory_format(model: nn.Module, layout: MemoryFormat) -> nn.Module:
    """`model` with its 4-d weights in `layout` (convolutions follow their weight's layout)."""
    return model.to(memory_format=torch_format(layout))


def describe_arithmetic(device: torch.device, threads: int, layout: MemoryFormat) -> str:
    """What a row's float rounding depends on beyond the config: the device (and on a CPU the torch
    threads per process) and the weights' memory layout; stamped on every row."""
    if device.type == "cpu":
        return f"CPU, {threads} torch thread{'s' * (threads > 1)}, {layout.value}"
    return f"{device_name(device)}, {layout.value}"
