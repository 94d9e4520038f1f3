"""Process-level settings a running experiment takes from whoever launched it.

`rmt-lab reproduce` runs neighbouring steps side by side, each on its share of the cores. A thread
count is fixed when a process starts, so when one step finishes the others would leave its cores
idle: instead the launcher names a file in RMT_LAB_THREADS_FILE, writes each step's share there,
and the step's loops call `follow_thread_budget()` between batches, which applies a changed share
with `torch.set_num_threads`. A stat per call; nothing when the variable is unset.
"""

from __future__ import annotations

import os
from pathlib import Path

THREADS_FILE_ENV = "RMT_LAB_THREADS_FILE"

# file -> (inode, mtime) last applied. Every write replaces the file by a new one, created while the old one
# exists, so consecutive writes differ in inode even within one tick of the coarse file clock.
_seen: dict[str, tuple[int, int]] = {}


def write_thread_budget(path: Path, threads: int) -> None:
    """Give the process that follows `path` `threads` threads (atomically: it may read at any moment)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(int(threads)))
    os.replace(tmp, path)


def follow_thread_budget() -> int | None:
    """Apply the thread count in $RMT_LAB_THREADS_FILE if it changed since the last call; returns it, or None."""
    name = os.environ.get(THREADS_FILE_ENV)
    if not name:
        return None
    try:
        info = os.stat(name)
        stamp = (info.st_ino, info.st_mtime_ns)
        if _seen.get(name) == stamp:
            return None
        threads = int(Path(name).read_text().strip())
    except (OSError, ValueError):  # not written yet, or mid-replace: the next call sees it
        return None
    _seen[name] = stamp
    if threads >= 1:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads
    return None
