"""The one chunked scoring loop behind `gcpl eval`, `gcpl predict` and the CLIP runner.

A job hands `score_into` the images still to score (each with the row id it gets in the JSONL),
how to read a chunk of files, and how to score the files that were read; the loop reads chunk by
chunk, writes one JSON line per image as soon as it is known (unreadable files as
{"index", "path", "skipped": reason}), shows a progress bar, and on Ctrl-C finishes the chunk in
hand and stops with `Interrupted` (its lines are on disk). What a job resumes from is
`gcpl.io.resume_jsonl(path)`: the whole records, with a torn last line dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .errors import Interrupted
from .interrupt import deferred_interrupt
from .io import append_jsonl


@dataclass(frozen=True)
class Item:
    index: int  # the image's row id ("index" in the JSONL)
    path: str


#: (paths) -> (pixels of the files that were read, their positions in paths, [(path, reason)] of the others)
Reader = Callable[[list[str]], tuple[object, list[int], list[tuple[str, str]]]]
#: (pixels, the items they are) -> one record per item (its "index" and "path" are added)
Scorer = Callable[[object, list[Item]], list[dict]]


def score_into(jsonl: Path, items: Sequence[Item], read: Reader, score: Scorer, *, chunk: int, total: int,
               done: int = 0, desc: str = "eval", progress: bool = True, log_stream=None) -> int:
    """Score `items` chunk by chunk into `jsonl`; `total`/`done`: the whole job's images and those
    already in the file (for the progress bar and the Ctrl-C message). Returns the items handled."""
    bar = tqdm(total=total, initial=done, desc=desc, unit="img", disable=not progress, file=log_stream)
    handled = 0
    try:
        with deferred_interrupt("images") as stop:
            for j in range(0, len(items), chunk):
                part = list(items[j : j + chunk])
                pixels, kept, skipped = read([it.path for it in part])
                read_ok = set(kept)
                unread = [it for k, it in enumerate(part) if k not in read_ok]  # in order, like `skipped`
                for it, (_, reason) in zip(unread, skipped):
                    append_jsonl(jsonl, {"index": it.index, "path": it.path, "skipped": reason})
                if kept:
                    scored = [part[k] for k in kept]
                    for it, record in zip(scored, score(pixels, scored)):
                        append_jsonl(jsonl, {"index": it.index, "path": it.path, **record})
                handled += len(part)
                bar.update(len(part))
                if stop.requested and j + chunk < len(items):
                    raise Interrupted(f"{done + handled} of {total} images done and kept in {jsonl}")
    finally:
        bar.close()
    return handled
