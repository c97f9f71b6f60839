"""Progress bars: a job's examples, and a whole sweep's when its jobs run in the launching process.

Hydra's basic launcher runs a sweep's jobs one after another in the process that launched them, so
a bar there can follow the whole sweep: examples done over all jobs, jobs done, and the time left
at the sweep's pace so far. Launchers that run jobs elsewhere (joblib, SLURM) show each job's bar
with its number in the sweep.
"""
from __future__ import annotations

from typing import Optional

from tqdm import tqdm

JOBS_ENV = "LTC_SWEEP_JOBS"  # the sweep's number of jobs, for jobs run in other processes


class SweepProgress:
    """One bar over every example of every job; its unit is an example, its ETA tqdm's (the sweep's
    pace so far: jobs of a larger model or a smaller learning rate take longer than their share)."""

    def __init__(self, examples_per_job: list[int], enabled: bool = True):
        self.planned, self.done_jobs = list(examples_per_job), 0
        self.bar = tqdm(total=sum(self.planned), desc=self._describe(), unit="example", position=0,
                        disable=not enabled, dynamic_ncols=True)

    @property
    def jobs(self) -> int:
        return len(self.planned)

    def _describe(self) -> str:
        return f"sweep: {self.done_jobs}/{len(self.planned)} jobs done"

    def job_started(self, num: int, examples: int, done: int) -> None:
        """Job `num` has `examples` to run in all, `done` of them already (a resumed job)."""
        self.bar.total += examples - self.planned[num]
        self.planned[num] = examples
        self.bar.update(done)

    def example_done(self) -> None:
        self.bar.update()

    def job_done(self) -> None:
        self.done_jobs += 1
        self.bar.set_description(self._describe())

    def close(self) -> None:
        self.bar.close()


_current: Optional[SweepProgress] = None


def start_sweep(examples_per_job: list[int], enabled: bool) -> SweepProgress:
    global _current
    _current = SweepProgress(examples_per_job, enabled)
    return _current


def current_sweep() -> Optional[SweepProgress]:
    """The sweep's bar, where this process runs the sweep's jobs (the basic launcher); else None."""
    return _current


def end_sweep() -> None:
    global _current
    if _current is not None:
        _current.close()
        _current = None


def job_label(num: Optional[int], jobs: Optional[int]) -> str:
    """`job 3/8 ` for a job of a sweep of known size, else ''."""
    return f"job {num + 1}/{jobs} " if num is not None and jobs else ""
