"""The aggregate's independent pieces (each run's statistics, each figure) spread over the allotted
cores in forked processes; in this process where there is one core or one piece."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from sweep.cores import allotted_cores


def run_all(calls: list[tuple]) -> list:
    """[function(*args) for function, *args in calls], in that order, computed side by side."""
    workers = min(allotted_cores()[0], len(calls))
    if workers < 2:
        return [function(*args) for function, *args in calls]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(function, *args) for function, *args in calls]
        return [future.result() for future in futures]
