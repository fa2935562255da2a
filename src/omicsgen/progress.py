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


EVERY = 30.0  # seconds between two progress lines of one loop


class Progress:
    """A long loop's share done, logged at most every EVERY seconds with the time it has taken and
    the time left at its rate so far. A loop that ends sooner logs nothing."""

    def __init__(self, log: logging.Logger, what: str, total: int):
        self.log, self.what, self.total = log, what, max(int(total), 1)
        self.done = 0
        self.started = self.last = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last < EVERY or self.done >= self.total:
            return
        self.last = now
        elapsed = now - self.started
        left = elapsed * (self.total - self.done) / self.done
        self.log.info("%s: %.0f%% done in %.0f s, about %.0f s left", self.what, 100 * self.done / self.total,
                      elapsed, left)
