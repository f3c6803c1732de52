"""User-facing errors: the CLI prints their message on one line, without a traceback."""


class GcplError(Exception):
    """Bad input or environment that the user can fix; the message says how."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C after the finished work was saved; the message says what was kept."""
