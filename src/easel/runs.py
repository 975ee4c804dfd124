"""What every trainer shares: a stop that saves, a pause that is not counted, whole checkpoints.

Each training loop runs inside ``stop_on_signal()``: SIGINT/SIGTERM set a flag the loop polls
(so it saves its checkpoint before it exits) and SIGTSTP pauses it for a time the loop leaves
out of its training time. Checkpoints are written with ``atomic_save``.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class RunSignals:
    """What signals have told a training loop: to stop (SIGINT, SIGTERM), and for how long it
    was paused (SIGTSTP until SIGCONT)."""

    stop: bool = False
    paused: float = 0.0

    def clock(self) -> float:
        """Monotonic seconds less the pauses so far: the difference of two readings is training
        time, whatever pause fell between them."""
        return time.monotonic() - self.paused


@contextmanager
def stop_on_signal(signals: RunSignals | None = None) -> Iterator[RunSignals]:
    """Turn SIGINT/SIGTERM into a flag the loop polls, so it can save and exit cleanly.

    SIGTSTP (Ctrl-Z, or ``kill -TSTP PID``) pauses the run until SIGCONT (``fg``, ``kill -CONT
    PID``) and counts how long, so a run paused to free the cores for other work does not count
    the pause as training time or spend its ``--minutes`` on it. (``kill -STOP`` cannot be seen
    by the process: that pause is counted.) A loop that reads ``signals`` outside the block (to
    time itself before or after it) passes its own.
    """
    signals = signals if signals is not None else RunSignals()

    def stop(signum: int, _frame: Any) -> None:
        log.warning("signal %d: saving a checkpoint and stopping", signum)
        signals.stop = True

    def pause(_signum: int, _frame: Any) -> None:
        log.warning("paused: SIGCONT (fg, kill -CONT %d) resumes; the pause is not counted as training",
                    os.getpid())
        t0 = time.monotonic()
        os.kill(os.getpid(), signal.SIGSTOP)  # returns once continued
        paused = time.monotonic() - t0
        signals.paused += paused
        log.warning("resumed after %.0f s paused", paused)

    handlers = {signal.SIGINT: stop, signal.SIGTERM: stop, signal.SIGTSTP: pause}
    old = {s: signal.getsignal(s) for s in handlers}
    try:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield signals
    finally:
        for s, before in old.items():
            with suppress(ValueError):
                signal.signal(s, before)


def atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` so that a reader sees the old file or the new, never half of one.

    The temporary file is named per process, so two runs that share a cache folder (two arms
    trained side by side both write the prompt cache) cannot rename each other's file away.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
