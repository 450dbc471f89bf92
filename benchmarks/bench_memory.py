"""Peak memory of a timed span, for the model benchmarks: GPU memory on CUDA, resident memory on CPU."""

from __future__ import annotations

import resource
from pathlib import Path
from types import TracebackType
from typing import Any

GIB = 2**30


def _rss_high_water_mark() -> int | None:
    """The process's peak resident memory (VmHWM) in bytes, or None where /proc has no such line."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rss_now() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rss_peak_reset() -> bool:
    """Set VmHWM back to the current RSS (Linux: writing 5 to clear_refs); False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """`with PeakMemory(device) as span:` records the peak of the span and the level it started from.

    CUDA: `torch.cuda.max_memory_allocated` (the peak counter is reset on entry, so the figure is this
    span's, though it includes whatever was already allocated: models other spans loaded stay counted).
    CPU: the process's peak RSS (VmHWM, reset on entry); where the kernel refuses the reset, the peak of
    the whole process so far (`ru_maxrss`), marked as such.
    """

    def __init__(self, device: Any) -> None:
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.device = device
        self.start: int | None = None
        self.peak: int | None = None
        self.whole_process = False

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.whole_process = not _rss_peak_reset()
            self.start = _rss_now()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = _rss_high_water_mark()
            if self.peak is None or self.whole_process:
                self.whole_process = True
                self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def label(self) -> str:
        return "GPU peak" if self.cuda else "peak RSS"

    def text(self) -> str:
        """'3.21 GiB (+0.40)': the span's peak and its growth over where the span started."""
        if self.peak is None:
            return "n/a"
        growth = f" (+{(self.peak - self.start) / GIB:.2f})" if self.start is not None else ""
        return f"{self.peak / GIB:.2f} GiB{growth}{' (process)' if self.whole_process else ''}"


def gpu_name(device: Any) -> str:
    """The CUDA card's name, or 'no GPU: peak RSS instead of GPU memory' on CPU."""
    if getattr(device, "type", None) == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return "no GPU (GPU memory n/a; peak RSS instead)"


def release(device: Any) -> None:
    """Drop unreferenced tensors (and CUDA's cached blocks) so the next span starts from what is live."""
    import gc

    gc.collect()
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.empty_cache()
