"""Peak memory of this process while a block runs: resident set size (sampled in a thread) and,
when CUDA is in use, the peak GPU memory torch allocated."""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import Any

import psutil


class PeakRSS:
    """``with PeakRSS() as peak: ...`` then ``peak.mb`` (highest RSS seen, MB) and ``peak.gpu_mb``
    (torch's peak CUDA allocation in the block, MB; None without CUDA)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.mb = 0.0
        self.gpu_mb: float | None = None
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
        cuda = _cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        cuda = _cuda()
        if cuda is not None:
            self.gpu_mb = cuda.max_memory_allocated() / 2**20


def _cuda() -> Any:
    """``torch.cuda`` when torch is already imported and a GPU is in use, else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda
