"""Ctrl-C at a safe point: long loops finish the unit of work in hand (a training step, a chunk
of images), save it, then stop with `Interrupted`; a second Ctrl-C stops at once."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class StopRequest:
    requested = False


@contextmanager
def deferred_interrupt():
    """Within the block, SIGINT sets `.requested` on the yielded object instead of raising (the
    loop checks it between units of work). Outside the main thread signals cannot be caught:
    `.requested` then stays False and Ctrl-C behaves as usual."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
