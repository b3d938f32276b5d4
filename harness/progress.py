"""Progress for `--quiet` runs: no bars, but at most one ETA line per loop every 30 s.

    generate sft: 120/400 done in 31s, ETA 72s

A loop that ends within 30 s prints nothing, so short runs stay silent. The lines go to
stderr (stdout keeps the summary and the leaderboard).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

EVERY = 30.0  # seconds between two lines of one loop


def eta_lines(iterable: Iterable[Any], desc: str, total: int | None = None,
              every: float = EVERY, stream: TextIO | None = None,
              clock: Callable[[], float] = time.monotonic) -> Iterator[Any]:
    """Yield `iterable`'s items; after an item, print `desc: i/n done in Ts, ETA Es` when
    `every` seconds have passed since the start or the previous line."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    start = last = clock()
    for i, item in enumerate(iterable, 1):
        yield item
        now = clock()
        if now - last >= every:
            last = now
            spent = now - start
            if total:
                eta = spent / i * (total - i)
                line = f"{desc}: {i}/{total} done in {spent:.0f}s, ETA {eta:.0f}s"
            else:
                line = f"{desc}: {i} done in {spent:.0f}s"
            print(line, file=stream or sys.stderr, flush=True)
