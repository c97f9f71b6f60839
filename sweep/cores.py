"""The CPU cores this process may use (torch-free: the analysis sizes its pool with it too)."""
from __future__ import annotations

import os


def allotted_cores() -> tuple[int, str]:
    """The cores this process was given, and where that number comes from: SLURM's allocation, else
    the process's CPU affinity (taskset, cgroups, container limits), else all cores."""
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return int(os.environ["SLURM_CPUS_PER_TASK"]), "SLURM_CPUS_PER_TASK"
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)), "the process's CPU affinity"
    return os.cpu_count() or 1, "os.cpu_count()"
