"""Progress lines for the long steps of a job, so that a job's log never goes silent for minutes."""

from __future__ import annotations

import contextlib
import logging
import time


@contextlib.contextmanager
def timed(log: logging.Logger, what: str):
    """Log `what` and its wall seconds once the block has run (not when it raises: the error says why)."""
    started = time.perf_counter()
    yield
    log.info("%s in %.1f s", what, time.perf_counter() - started)
