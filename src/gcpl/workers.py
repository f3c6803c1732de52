"""Worker processes that end with the process that started them.

`gcpl demo` runs its methods in single-threaded worker processes. Ctrl-C reaches the whole process
group, but a `kill` of the demo alone used to leave its workers training on as orphans, holding
their folders' locks (gcpl.lock) so that the next run was refused. Each worker here watches its
parent and exits when the parent is gone; what it leaves behind is what an interrupted run leaves
(checkpoints, complete JSONL lines, a stale lock that the next run takes over).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

__all__ = ["worker_pool"]


def _exit_with_parent(parent: int, poll_s: float) -> None:
    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_pool(workers: int, poll_s: float = 1.0) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes (fresh interpreters: no forked torch threads) that each
    exit within `poll_s` seconds of this process's end."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(), poll_s))
