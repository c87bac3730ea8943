import logging

from abmilx.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_logs_at_most_every_interval_and_at_finish(caplog):
    clock = FakeClock()
    progress = Progress("predict", total=10, unit="slides", every_s=30, clock=clock)
    with caplog.at_level(logging.INFO, logger="abmilx.progress"):
        for _ in range(4):
            clock.now += 10
            progress.update()
        clock.now += 5
        progress.finish()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("predict: 3/10 slides, 0.1 slides/s, 30 s")
    assert lines[1].startswith("predict: 4/10 slides")
