"""The process around Hydra: its set-up (reproducible MKL results, glibc keeping freed memory, frozen
imports), user errors as one `error:` block, and the cores each job of a launcher gets."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from sweep.errors import UserError

CONF = Path(__file__).resolve().parents[1] / "conf"


def prepare_process() -> None:
    """Process-wide settings, made before the first computation.

    Intel MKL's multithreaded GEMM is not run-to-run reproducible by default (at 2 threads the
    gradient of a convolution on a 1x1 feature map varied between identical calls); its
    conditional numerical reproducibility mode, read at MKL's first call, makes runs repeat bit for
    bit at a fixed thread count at no measurable cost. A value set by the user is kept.
    """
    os.environ.setdefault("MKL_CBWR", "AUTO")
    # cuBLAS needs a fixed workspace for deterministic results (read when CUDA starts; harmless without it)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    keep_freed_memory()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt(3) parameters
MMAP_THRESHOLD_MAX = 32 * 2 ** 20  # glibc's largest on 64-bit systems


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of giving it back to the kernel.

    Every step of the loop allocates its gradients and activations afresh (a model's gradients are
    freed after each update); by default glibc serves blocks of a few MB with mmap and unmaps them
    when freed, so each step faults its gradients' pages in again and the kernel zeroes them, which
    on small inputs takes longer than the arithmetic (benchmarks/README.md). Blocks up to 32 MB from
    the heap, and a heap that is not trimmed, make the steps reuse the same pages. Memory placement
    changes no value. Set once per process, before the first computation; forked workers inherit it.
    A libc without mallopt (not glibc): nothing is changed (False)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    except (OSError, AttributeError):
        return False


@functools.cache
def freeze_imports() -> None:
    """Keep every object alive now (the modules a job has just imported: torch, timm, pandas...) out
    of garbage collection from here on: they live as long as the process, and collecting them at
    exit took over a second of each demo job (`gc.freeze`). Once per process, so that a launcher
    process running job after job never freezes a finished job's garbage."""
    gc.freeze()


class _SacctUnavailable(logging.Filter):
    """Without SLURM accounting, submitit warns on every status poll that `sacct` failed; say it once."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if self.said:
            return False
        self.said = True
        record.msg, record.args = ("sacct is unavailable (no SLURM accounting storage): job states come from the "
                                   "jobs' own result files; this is said once"), ()
        return True


def quiet_sacct_warnings() -> None:
    logging.getLogger("submitit").addFilter(_SacctUnavailable())


@contextlib.contextmanager
def report_errors():
    """Exit with status 2 and one `error: ...` block for a user mistake (bad config or input);
    any other exception is a bug and keeps its traceback."""
    from hydra.errors import HydraException
    try:
        yield
    except UserError as error:
        _fail(str(error))
    except HydraException as error:  # composition: unknown keys, bad values, missing presets
        _fail(composition_message(error))


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def composition_message(error: Exception) -> str:
    text = str(error)
    missing = re.search(r"Could not find '(\w+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        hint = (f" Any timm architecture works as model.arch={option}." if group == "model" else "")
        return f"{group}={option}: no such option (options: {', '.join(options)}).{hint}"
    cause = f": {error.__cause__}" if error.__cause__ is not None else ""
    return text.split("\n\nConfig search path")[0].strip() + cause


def launcher_cores(hydra_cfg) -> tuple[int, str] | None:
    """Under the joblib launcher, this job's share of the cores (its parallel jobs split them)."""
    n_jobs = OmegaConf.select(hydra_cfg, "launcher.n_jobs")
    if n_jobs is None:
        return None
    from sweep.cores import allotted_cores
    cores, source = allotted_cores()
    n_jobs = cores if n_jobs < 0 else n_jobs
    return max(1, cores // n_jobs), f"{source} shared by hydra.launcher.n_jobs={n_jobs}"
