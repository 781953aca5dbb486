"""Running one pycolmap call: its native log into the capture log, its progress onto a bar.

COLMAP logs through glog to the process's stderr, which pycolmap does not let Python redirect; so
while a call runs, file descriptors 1 and 2 point at the log file, and progress bars write to a
duplicate of the real stderr. The call runs in a worker thread (pycolmap releases the GIL) while
this thread follows the log for COLMAP's own "[i/N]" progress lines, which only move the bar.
COLMAP's random generator is per thread, so the worker seeds its own before the call.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

_POLL_SECONDS = 0.2


@contextmanager
def native_output_to(log_path: Path) -> Iterator[TextIO]:
    """Send everything written to fds 1 and 2 to `log_path`; yield a text stream to the real stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        terminal.close()


def run_colmap(call: Callable[[tqdm], object], log_path: Path, desc: str, total: int, unit: str, seed: int,
               progress: str | None = None):
    """Run `call(bar)` with its output in `log_path`, a progress bar of `total` steps and COLMAP's random
    generator seeded with `seed`; returns its result.

    progress: a regex whose first group counts finished steps in COLMAP's log lines (the last match
    wins); calls that report progress through callbacks update the bar they are given instead.
    """
    start = log_path.stat().st_size if log_path.exists() else 0
    outcome: dict = {}

    def target() -> None:
        import pycolmap

        try:
            pycolmap.set_random_seed(seed)
            outcome["value"] = call(bar)
        except BaseException as e:  # re-raised in the calling thread
            outcome["error"] = e

    with native_output_to(log_path) as terminal, tqdm(total=total, desc=desc, unit=unit, file=terminal,
                                                      leave=False, dynamic_ncols=True) as bar:
        worker = threading.Thread(target=target, name=f"colmap {desc}", daemon=True)
        worker.start()
        pattern = re.compile(progress) if progress else None
        with open(log_path, "rb") as log:
            log.seek(start)
            text = ""
            while worker.is_alive():
                worker.join(_POLL_SECONDS)
                if pattern is not None:
                    text = (text + log.read().decode("utf-8", "replace"))[-4096:]
                    done = [int(m.group(1)) for m in pattern.finditer(text)]
                    if done and done[-1] > bar.n:
                        bar.update(min(done[-1], total) - bar.n)
        if "error" in outcome:
            raise outcome["error"]
        bar.update(total - bar.n)
    return outcome.get("value")

