"""Peak resident memory of this process while a block runs (sampled in a thread)."""

from __future__ import annotations

import threading
from types import TracebackType

import psutil


class PeakRSS:
    """``with PeakRSS() as peak: ...`` then ``peak.mb``: the highest RSS seen, in MB."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.mb = 0.0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _sample(self) -> None:
        self.mb = max(self.mb, self._proc.memory_info().rss / 2**20)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakRSS:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
