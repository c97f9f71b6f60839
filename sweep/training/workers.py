"""Worker processes: several forked copies of the pretrained model fine-tune examples side by side.

On a CPU the tiny steps of single-example fine-tuning do not spread well over threads (the demo
model runs as fast on one thread as on two), so `execution.workers=N` forks N processes, each with
one torch thread (OpenMP cannot start threads in a process forked from a multithreaded one) and
its own copy of the model, that take examples from one shared queue (in the order given) and send
their results rows back. The parent writes every row, so
resuming, the results file and the summary are the same as with one process. Each example is
still fine-tuned by the same code (simple path or batched engine), from the same pretrained state.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator

import torch

from sweep.errors import UserError

_DONE, _ROW, _ERROR, _USER_ERROR = "done", "row", "error", "user error"


def rows_in_workers(process: Callable[[Iterable, Callable[[], bool]], Iterator], tasks: list, workers: int,
                    threads: int, stopping: Callable[[], bool]) -> Iterator:
    """Rows of `process(tasks, stopping)` computed by `workers` forked processes, as they come back.

    `process` maps an iterable of tasks to results rows, and gives up the example in hand when its
    `stopping()` turns true; forking hands it, with the model it closes over, to each worker
    unchanged. `stopping()` is polled here: once true, the workers take no new task and hand back the
    ones in hand. Workers ignore SIGINT and SIGTERM (a signal to the whole process group reaches
    this process, which decides) and die with this process (Linux's parent-death signal, else a
    watchdog). A worker that fails or dies raises here, after the rows before it (a UserError as it was raised,
    anything else with the worker's traceback).
    """
    context = multiprocessing.get_context("fork")
    todo, results, stop = context.Queue(), context.Queue(), context.Event()
    for position in range(len(tasks)):
        todo.put(position)
    for _ in range(workers):
        todo.put(None)
    parent = os.getpid()
    procs = [context.Process(target=_work, args=(process, tasks, todo, results, stop, threads, parent),
                             name=f"ltc-worker-{i}") for i in range(workers)]
    for proc in procs:
        proc.start()
    try:
        running = workers
        while running:
            if stopping():
                stop.set()
            try:
                kind, payload = results.get(timeout=0.5)
            except queue.Empty:  # no row for a while: has a worker died?
                if stopping():  # a signal that also reached the workers may have ended them meanwhile
                    stop.set()
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead and not stop.is_set():
                    raise RuntimeError(f"worker {dead[0].name} exited with code {dead[0].exitcode} "
                                       f"(killed? out of memory?); rows finished before are kept") from None
                if dead and all(p.exitcode is not None for p in procs):
                    return
                continue
            if kind == _ROW:
                yield payload
            elif kind == _DONE:
                running -= 1
            elif kind == _USER_ERROR:  # a file or an input at fault, not a bug: one line, as in the parent
                raise payload
            else:
                raise RuntimeError(f"a worker failed; rows finished before are kept. Its traceback:\n{payload}")
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():  # workers ignore SIGTERM
                proc.kill()
                proc.join()


def _work(process, tasks, todo, results, stop, threads: int, parent: int) -> None:
    """A worker: take task positions until the sentinel or a stop, send back each row."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a signal to the whole group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with(parent)
    torch.set_num_threads(threads)
    try:
        taken = iter(todo.get, None)
        for row in process((tasks[position] for position in taken), stop.is_set):
            results.put((_ROW, row))
    except UserError as error:  # e.g. an image file that cannot be read: the parent raises it as it is
        results.put((_USER_ERROR, error))
        return
    except BaseException:  # whatever it is, the parent must hear of it
        results.put((_ERROR, traceback.format_exc()))
        return
    results.put((_DONE, None))


PR_SET_PDEATHSIG = 1  # prctl(2)


def _die_with(parent: int) -> None:
    """End this process when `parent` ends, however it ends (SIGKILL included): the kernel's
    parent-death signal on Linux, else a thread that polls for the parent."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    if not armed:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1)
            os._exit(1)
        threading.Thread(target=watch, name="ltc-watchdog", daemon=True).start()
