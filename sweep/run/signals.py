"""SIGINT / SIGTERM: hand back the examples in flight (no row: a rerun redoes them), summarize, stop cleanly."""
from __future__ import annotations

import logging
import signal

log = logging.getLogger(__name__)


class StopRequest:
    """A context in which SIGINT and SIGTERM set `signal` instead of killing; a second one stops at once."""

    def __init__(self):
        self.signal = None

    def __enter__(self) -> StopRequest:
        # Only where the signal has its default disposition: a launcher that handles it (submitit
        # requeues pre-empted jobs) keeps its handler.
        defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
        self.previous = {s: signal.signal(s, self._handle) for s, default in defaults.items()
                         if signal.getsignal(s) is default}
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        log.warning("%s received: handing back the examples in hand (a rerun redoes them), then stopping; "
                    "a second signal stops at once", self.signal)

    def requested(self) -> bool:
        return self.signal is not None

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
