"""Another process that signals this one the way a user pauses or stops a training run."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def signaller(once: Path, pause_s: float, then: str | None = None) -> subprocess.Popen[bytes]:
    """Once ``once`` exists, pause this process (SIGTSTP, as Ctrl-Z), continue it ``pause_s``
    later (SIGCONT), then, if ``then`` names a signal (``INT``, ``TERM``), send it half a second
    later. Wait on the returned process; it exits 0 when every signal was sent."""
    pid = os.getpid()
    script = (f"while [ ! -e {once} ]; do sleep 0.05; done; "
              f"kill -TSTP {pid}; sleep {pause_s}; kill -CONT {pid}")
    if then:
        script += f"; sleep 0.5; kill -{then} {pid}"
    return subprocess.Popen(["sh", "-c", script])


def paused_then_stopped(run: Callable[[], object], checkpoint: Path) -> dict[str, Any]:
    """Call ``run`` (a trainer) while another process pauses it for 1.5 s once ``checkpoint``
    exists, then presses Ctrl-C. Checks that the run ended with ``Interrupted`` and that the
    checkpoint it saved counts no more training time than the run had outside the pause;
    returns that checkpoint."""
    import pytest
    import torch

    from easel.errors import Interrupted

    waker = signaller(checkpoint, 1.5, then="INT")
    started = time.monotonic()
    with pytest.raises(Interrupted, match="stopped"):
        run()
    wall = time.monotonic() - started
    assert waker.wait(timeout=10) == 0
    saved: dict[str, Any] = torch.load(checkpoint, weights_only=False)
    assert 0 < saved["elapsed"] <= wall - 1.4, (saved["elapsed"], wall)  # the pause is left out
    return saved
