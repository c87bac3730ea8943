"""Rate-limited progress lines for long jobs, so a log never stays silent for long.

Whole-slide prediction, feature extraction and training can run for hours on a real cohort; a
Snakemake log that stays empty looks like a hang. `Progress` writes one line when `every_s`
seconds have passed since the last one (and at the end), with items done, total and rate.
"""

from __future__ import annotations

import logging
import time

DEFAULT_EVERY_S = 30.0


class Progress:
    """Counts work units (`update(n)`) and logs "<what>: done/total <unit>, rate/s" at most every
    `every_s` seconds (default `DEFAULT_EVERY_S`, read when the counter starts); `finish()` logs
    the final line. `clock` is injectable for tests."""

    def __init__(
        self,
        what: str,
        total: int | None = None,
        unit: str = "items",
        *,
        every_s: float | None = None,
        logger: logging.Logger | None = None,
        clock=time.monotonic,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.every_s = DEFAULT_EVERY_S if every_s is None else every_s
        self.log = logger or logging.getLogger("abmilx.progress")
        self.clock = clock
        self.done = 0
        self.started = self.last = clock()

    def update(self, n: int = 1, **extra: object) -> None:
        self.done += n
        if self.clock() - self.last >= self.every_s:
            self._emit(extra)

    def finish(self, **extra: object) -> None:
        self._emit(extra)

    def _emit(self, extra: dict) -> None:
        now = self.clock()
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        total = f"/{self.total}" if self.total is not None else ""
        details = "".join(f", {key} {value}" for key, value in extra.items())
        self.log.info(
            "%s: %d%s %s, %.1f %s/s, %.0f s%s",
            self.what,
            self.done,
            total,
            self.unit,
            self.done / elapsed,
            self.unit,
            elapsed,
            details,
        )
