"""Another process that signals this one the way a user pauses or stops a training run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


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
