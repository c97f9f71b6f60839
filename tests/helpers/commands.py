"""Run `main.py` as a user would: in a subprocess, waiting for rows, reading what it wrote."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from helpers.configs import ROOT, on_cpu


def main_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "main.py"), *on_cpu(args)]


def run_main(*args: str, cwd: Path | None = None, timeout: int = 600,
             check: bool = True) -> subprocess.CompletedProcess:
    """`python main.py args`; with `check`, a non-zero exit fails the test with the end of stderr."""
    result = subprocess.run(main_command(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def wait_for_rows(csv: Path, n: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until `csv` holds more than `n` lines (header included), while `process` runs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if csv.exists() and len(csv.read_text().splitlines()) > n:
            return
        assert process.poll() is None, f"finished before {n} rows were written"
        time.sleep(0.05)
    raise TimeoutError(csv)


def results(directory: Path) -> pd.DataFrame:
    """A run's result rows without the timing column, in selection order."""
    rows = pd.read_csv(directory / "single_example_results.csv").drop(columns=["seconds"])
    return rows.sort_values("example_index").reset_index(drop=True)


def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    """`python main.py args` in this process (no interpreter start-up): (exit status, stderr + stdout)."""
    import contextlib
    import io
    import os
    import runpy

    from hydra.core.global_hydra import GlobalHydra

    output, argv, previous = io.StringIO(), sys.argv, os.getcwd()
    sys.argv = [str(ROOT / "main.py"), *on_cpu(args)]
    code = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stderr(output), contextlib.redirect_stdout(output):
            runpy.run_path(str(ROOT / "main.py"), run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if not isinstance(stop.code, int) and stop.code is not None:
            output.write(str(stop.code))
    finally:
        sys.argv = argv
        os.chdir(previous)
        GlobalHydra.instance().clear()
    return code, output.getvalue()
