"""Ctrl-C at a safe point: long loops finish the unit of work in hand (a training step, a chunk
of images), save it, then stop with `Interrupted`; a second Ctrl-C stops at once. The first
Ctrl-C says so at once on stderr, so a long unit of work does not look like a hang."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager


class StopRequest:
    requested = False


@contextmanager
def deferred_interrupt(unit: str = "work"):
    """Within the block, SIGINT sets `.requested` on the yielded object instead of raising (the
    loop checks it between units of work) and prints "finishing the {unit} in hand (Ctrl-C again
    to stop now)" to stderr; a second SIGINT raises KeyboardInterrupt. Outside the main thread
    signals cannot be caught: `.requested` then stays False and Ctrl-C behaves as usual."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        try:
            print(f"\nfinishing the {unit} in hand (Ctrl-C again to stop now)", file=sys.stderr, flush=True)
        except (OSError, ValueError):  # stderr closed: stopping matters more than saying so
            pass

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
