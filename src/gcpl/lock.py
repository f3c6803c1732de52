"""One process per output folder: every command that writes an `--out` holds OUT/.gcpl.lock while
it runs, so two processes never append to the same predictions.jsonl or checkpoint.

The lock file is created atomically (os.open with O_CREAT | O_EXCL) and holds its owner as JSON:
{"pid", "host", "command" (the command line), "job", "since"}. It is removed when the job ends,
also on an error or Ctrl-C. Another process finds it and is refused with one line naming the owner;
a lock left by a process that is gone (same host, its PID no longer running, e.g. after `kill -9`)
is taken over with a one-line note. A lock from another host cannot be checked: it is refused,
and the message says which file to delete once that process is known to be gone.

Locks are re-entrant within a process: a job that runs other jobs (the demo, an experiment) may
lock the folders of the jobs it runs, and a nested job locking a folder its own process already
holds goes on. Under a multi-process launch (torchrun, accelerate) only rank 0 takes the lock.

    with output_lock("runs/cars", "train"):
        ...                                  # write into runs/cars

    @locked("eval")                          # the same around a job function: job.out is locked
    def evaluate(job, ...): ...
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

from .errors import GcplError

__all__ = ["LOCK_FILE", "LockNote", "held_by", "locked", "output_lock"]

LOCK_FILE = ".gcpl.lock"
#: a lock file younger than this and still empty is being written by its owner: wait for it
WRITING_GRACE_S = 2.0
#: a takeover in progress older than this was left by a process that died during it
TAKEOVER_STALE_S = 10.0

_held: dict[str, tuple[int, int]] = {}  # lock path -> (pid that holds it, depth)
_guard = threading.Lock()


class LockNote(UserWarning):
    """A lock left by a process that is gone was taken over (shown as one `note:` line)."""


def _command_line() -> str:
    argv = list(sys.argv) or ["python"]
    prog = Path(argv[0]).name
    if prog in ("__main__.py", "-m"):
        prog = "python -m gcpl.cli"
    elif prog == "-c":
        prog = "python -c ..."
        argv = argv[:1]
    return " ".join([prog, *(shlex.quote(a) for a in argv[1:])])


def _owner_record(job: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(), "job": job,
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def held_by(folder: str | Path, name: str = LOCK_FILE) -> dict | None:
    """The owner record of a folder's lock (None: not locked, or the file cannot be read yet)."""
    return _read(Path(folder) / name)


def _read(path: Path) -> dict | None:
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        return None
    return owner if isinstance(owner, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def _is_stale(owner: dict) -> bool:
    """Left by a process that is gone: same host and its PID not running (or our own PID, which
    does not hold it: a PID reused since, e.g. in a container)."""
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    return pid == os.getpid() or not _alive(pid)


def _describe(owner: dict) -> str:
    return (f"PID {owner.get('pid')} on {owner.get('host')}, `{owner.get('command') or owner.get('job')}`, "
            f"since {owner.get('since')}")


def _take_over(path: Path, seen: bytes) -> None:
    """Remove the stale lock file `path` if it still holds `seen`; one process at a time does this
    (a second, exclusive file), so a lock that another process has just created is never removed."""
    mutex = path.with_name(path.name + ".takeover")
    try:
        fd = os.open(mutex, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        try:
            if time.time() - mutex.stat().st_mtime > TAKEOVER_STALE_S:
                mutex.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
        return
    try:
        os.close(fd)
        try:
            if path.read_bytes() == seen:
                path.unlink()
        except FileNotFoundError:
            pass
    finally:
        mutex.unlink(missing_ok=True)


def _acquire(path: Path, folder: Path, job: str) -> None:
    record = json.dumps(_owner_record(job)).encode()
    deadline = time.monotonic() + 30
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, record)
                os.fsync(fd)
            finally:
                os.close(fd)
            return
        if time.monotonic() > deadline:  # only a stream of takeovers or writes gets here
            raise GcplError(f"could not lock {folder}: {path} keeps changing; is another gcpl process starting?")
        try:
            seen = path.read_bytes()
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            continue  # released in between: try again
        try:
            owner = json.loads(seen)
        except json.JSONDecodeError:
            owner = None
        if not isinstance(owner, dict):
            if age < WRITING_GRACE_S:  # its owner is writing it
                time.sleep(0.05)
                continue
            owner = {}  # unreadable and old: left by a crash while it was written
        elif not _is_stale(owner):
            raise GcplError(f"{folder} is in use by another gcpl process ({_describe(owner)}); wait for it to "
                            f"finish or use another --out (if that process is gone, delete {path})")
        what = f"PID {owner.get('pid')}, `{owner.get('command') or owner.get('job')}`" if owner else "unreadable"
        warnings.warn(f"{folder}: took over the lock left by a process that is no longer running ({what})",
                      LockNote, stacklevel=4)
        _take_over(path, seen)


def _release(path: Path) -> None:
    owner = _read(path)
    if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _make_dirs(folder: Path) -> list[Path]:
    """Create folder and its missing parents; returns the ones created, outermost first."""
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def _remove_if_empty(created: list[Path]) -> None:
    """Folders the lock created and nothing else filled: removed (a refused job leaves nothing)."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            return


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    except ValueError:
        return 0


@contextlib.contextmanager
def output_lock(folder: str | Path, job: str, name: str = LOCK_FILE):
    """Hold `folder`/`name` for the block (see the module docstring); `job` names what runs
    ("train", "eval", ...). Raises GcplError (one line, naming the owner) when another live
    process holds it."""
    folder = Path(folder)
    path = folder / name
    key = os.path.abspath(path)
    pid = os.getpid()
    if _rank() != 0:
        yield
        return
    with _guard:
        holder, depth = _held.get(key, (None, 0))
        nested = holder == pid and path.exists()
        if nested:
            _held[key] = (pid, depth + 1)
    if nested:
        try:
            yield
        finally:
            with _guard:
                _held[key] = (pid, _held[key][1] - 1)
        return
    if folder.exists() and not folder.is_dir():
        raise GcplError(f"{folder} is a file; give a folder as --out")
    created = []
    try:
        created = _make_dirs(folder)
        _acquire(path, folder, job)
    except OSError as e:
        _remove_if_empty(created)
        raise GcplError(f"cannot write into {folder}: {e.strerror or e}; choose another --out") from None
    except BaseException:
        _remove_if_empty(created)
        raise
    with _guard:
        _held[key] = (pid, 1)
    try:
        yield
    finally:
        with _guard:
            _held.pop(key, None)
        _release(path)
        _remove_if_empty(created)


def locked(job: str, folder_of=lambda job: job.out, name=lambda job: LOCK_FILE):
    """Decorator for a job function `fn(job, ...)`: the job's output folder is locked while it runs."""

    def decorate(fn):
        @functools.wraps(fn)
        def run(settings, *args, **kwargs):
            with output_lock(folder_of(settings), job, name(settings)):
                return fn(settings, *args, **kwargs)

        return run

    return decorate
