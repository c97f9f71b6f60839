"""Execution chosen automatically (explicit values win), and the cores a job was given."""
import pytest
import torch

from helpers.configs import compose_config
from sweep.config import MemoryFormat
from sweep.cores import allotted_cores
from sweep.errors import UserError
from sweep.training.hardware import memory_format
from sweep.training.planner import choose

CPU, GPU = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("overrides, device, cores, todo, expected", [
    ([], CPU, 2, 200, (2, 1, 1)),                       # one single-threaded worker per core
    ([], CPU, 16, 5, (5, 1, 1)),                        # no more workers than examples
    ([], CPU, 2, 1, (1, 1, 1)),                         # one example: one process, still one thread
    ([], CPU, 1, 50, (1, 1, 1)),
    (["execution.threads=2"], CPU, 8, 50, (1, 2, 1)),   # threads asked for: one process
    (["execution.workers=3"], CPU, 2, 50, (3, 1, 1)),   # explicit values win
    (["execution.workers=1"], CPU, 2, 50, (1, 2, 1)),
    (["execution.parallel=8"], CPU, 2, 50, (2, 1, 8)),
    ([], GPU, 16, 50, (1, 16, "auto")),                 # a GPU: one process; the engine's K is sized later
])
def test_auto_choices(overrides, device, cores, todo, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: device.type == "cuda")
    plan = choose(compose_config(*overrides).execution, device, cores, todo)
    assert (plan.workers, plan.threads, plan.parallel) == expected
    assert plan.reason


@pytest.mark.parametrize("overrides, device, message", [
    (["execution.workers=2", "execution.threads=2"], CPU, "forked workers run one torch thread each"),
    (["execution.workers=2"], GPU, "execution.workers=2 forks CPU processes"),
])
def test_impossible_combinations_are_refused(overrides, device, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: device.type == "cuda")
    with pytest.raises(UserError, match=message):
        choose(compose_config(*overrides).execution, device, 4, 10)


def test_cores_from_slurm_else_affinity(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert allotted_cores() == (3, "SLURM_CPUS_PER_TASK")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert allotted_cores() == (1, "the process's CPU affinity")


def test_cpu_workers_on_a_machine_with_a_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    plan = choose(compose_config().execution, CPU, 8, 50)
    assert (plan.workers, plan.threads) == (1, 8) and "a GPU is visible" in plan.reason
    with pytest.raises(UserError, match="CUDA_VISIBLE_DEVICES="):
        choose(compose_config("execution.workers=2").execution, CPU, 8, 50)


@pytest.mark.parametrize("arch, setting, device, expected", [
    ("test_efficientnet", "auto", "cpu", "channels_last"),  # depthwise convolutions: oneDNN's kernels
    ("test_efficientnet", "auto", "cuda", "contiguous"),    # unmeasured on GPUs: torch's default
    ("test_resnet", "auto", "cpu", "contiguous"),
    ("test_resnet", "channels_last", "cpu", "channels_last"),
    ("test_efficientnet", "contiguous", "cpu", "contiguous"),
])
def test_memory_format_choice(arch, setting, device, expected):
    import timm
    layout, reason = memory_format(MemoryFormat(setting), timm.create_model(arch), torch.device(device))
    assert layout == MemoryFormat(expected) and reason
