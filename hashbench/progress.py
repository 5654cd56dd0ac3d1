"""Progress output: a tqdm bar on a terminal, plain lines in CI logs and pipes.

All progress goes to stderr so that stdout carries only results (tables, JSON).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")


class Reporter:
    """Reports grid progress; ``progress`` is handed to methods as ``RunContext.progress``."""

    def __init__(self, stream: IO[str] | None = None, interactive: bool | None = None,
                 quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.interactive = (self.stream.isatty() if interactive is None else interactive)
        self.quiet = quiet
        self.total = 0
        self._bar: Any = None
        self._trial_start = 0.0

    def _line(self, text: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A one-off line (cache hits, warnings) that does not break the bar."""
        self._line(text)

    def start(self, total: int, protocol: Any, split: Any, store_uri: str) -> None:
        self.total = total
        self._line(
            f"protocol {protocol.name} on {protocol.dataset}: {len(split.query)} queries, "
            f"{len(split.database)} database, {len(split.train)} training "
            f"({split.train_mode}); split {split.sha256[:12]}"
        )
        self._line(f"store {store_uri}; {total} trials")
        if self.interactive and not self.quiet:
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=self.stream, unit="trial", dynamic_ncols=True)

    def trial_started(self, trial: Any) -> None:
        self._trial_start = time.perf_counter()
        if self._bar is not None:
            self._bar.set_description(trial.label)

    def trial_done(self, index: int, outcome: Any) -> None:
        width = len(str(self.total))
        head = f"[{index:>{width}}/{self.total}] {outcome.trial.label:<28}"
        if outcome.status == "SKIPPED":
            why = outcome.error or f"finished before: run {outcome.run_id[:8]}"  # or claimed elsewhere
            text = f"{head} skipped ({why})"
        elif outcome.status == "FAILED":
            text = f"{head} FAILED: {outcome.error}"
        else:
            m = outcome.metrics
            maps = {k: v for k, v in m.items() if k == "map" or k.endswith(".map")}  # per task
            shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(maps.items())) or "map=nan"
            text = (f"{head} {shown} "
                    f"train={m.get('train_seconds', 0):.2f}s "
                    f"total={time.perf_counter() - self._trial_start:.2f}s")
            if outcome.flags:
                text += "  FLAGGED: " + "; ".join(f"{k}: {v}" for k, v in outcome.flags.items())
        self._line(text)
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def progress(self, iterable: Iterable[T], total: int | None = None,
                 desc: str = "") -> Iterator[T]:
        """Inner-loop progress for methods: a transient bar, or a line every 15 seconds."""
        if self.quiet:
            yield from iterable
            return
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        if self.interactive:
            from tqdm import tqdm

            yield from tqdm(iterable, total=total, desc=desc, leave=False, file=self.stream,
                            dynamic_ncols=True)
            return
        # plain lines for logs: at most one every 15 seconds, so CI logs stay readable
        last = time.monotonic()
        for i, item in enumerate(iterable, 1):
            yield item
            now = time.monotonic()
            if now - last >= 15:
                last = now
                of = f"/{total}" if total else ""
                print(f"    {desc or 'progress'}: {i}{of}", file=self.stream, flush=True)
