"""Progress output: a tqdm bar on a terminal, plain lines in CI logs and pipes.

All progress goes to stderr so that stdout carries only results (tables, JSON).

The ETA is a sum over the trials still to run of a per-trial estimate: the mean duration of
this grid's finished trials of the same method and code length (they ran on this machine at
its present load), else the median duration of earlier FINISHED runs of the same method on
the same dataset (same code length when there are some) from the store, else the mean of this
grid's finished trials of that method, else of all its finished trials. (A store filled on a
much busier machine once put 7h46m on a queue that took under an hour.) On a terminal the bar
refreshes every second with the running trial's elapsed time, so a long trial never looks
frozen.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")

TICK_SECONDS = 1.0


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Estimates:
    """Per-trial duration estimates (seconds) from a store's earlier runs and this grid's."""

    def __init__(self, history: list[tuple[str, str, int, float]] | None = None,
                 dataset: str = "") -> None:
        self.dataset = dataset
        self.history = [h for h in history or [] if h[3] > 0]  # (method, dataset, bits, seconds)
        self.done: dict[str, list[float]] = {}
        self.done_at: dict[tuple[str, int], list[float]] = {}  # (method, bits) -> seconds

    @classmethod
    def from_store(cls, store: Any, dataset: str) -> Estimates:
        """Durations of the store's FINISHED trial runs (MLflow start and end times)."""
        history = []
        try:
            for run in store.trial_runs("FINISHED"):
                info, params = run.info, run.data.params
                if info.end_time and info.start_time and params.get("method"):
                    history.append((params["method"], params.get("dataset", ""),
                                    int(params.get("bits", 0) or 0),
                                    (info.end_time - info.start_time) / 1000))
        except Exception:  # noqa: BLE001 - an estimate is never worth failing a run for
            history = []
        return cls(history, dataset)

    def record(self, method: str, seconds: float, bits: int | None = None) -> None:
        self.done.setdefault(method, []).append(seconds)
        if bits is not None:
            self.done_at.setdefault((method, int(bits)), []).append(seconds)

    def of(self, method: str, bits: int) -> float | None:
        if self.done_at.get((method, bits)):
            return statistics.fmean(self.done_at[(method, bits)])
        same = [h for h in self.history if h[0] == method and h[1] == self.dataset]
        exact = [h[3] for h in same if h[2] == bits]
        if exact or same:
            return statistics.median(exact or [h[3] for h in same])
        if self.done.get(method):
            return statistics.fmean(self.done[method])
        everything = [x for xs in self.done.values() for x in xs]
        return statistics.fmean(everything) if everything else None


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
        self.estimates = Estimates()
        self._queue: list[tuple[str, int]] = []  # (method, bits) of the trials not started yet
        self._current: Any = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.live = type(self) is Reporter  # subclasses (the pooled executors') keep their own bar

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
            f"({split.train_mode}); split {split.sha256[:12]} (evaluation split {split.eval_sha256[:12]}, "
            "the one reports compare)"
        )
        self._line(f"store {store_uri}; {total} trials")
        if self.interactive and not self.quiet:
            from tqdm import tqdm

            # tqdm's own remaining-time guess (the mean so far) is replaced by the per-method ETA
            fmt = ("{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]" if self.live else None)
            self._bar = tqdm(total=total, file=self.stream, unit="trial", dynamic_ncols=True,
                             bar_format=fmt)

    def planned(self, pending: list[Any], store: Any = None, dataset: str = "") -> None:
        """The trials about to run (after the skipped ones): the ETA's queue; ``store`` gives
        the earlier runs' durations."""
        self._queue = [(spec.method, spec.bits) for spec in pending]
        if store is not None and pending:
            self.estimates = Estimates.from_store(store, dataset)
        if self._bar is not None and self.live:
            self._bar.set_postfix_str(self._status())

    def eta(self) -> float | None:
        """Seconds left: the running trial's estimate minus its elapsed time, plus the queue's."""
        total = 0.0
        items = list(self._queue)
        if self._current is not None:
            guess = self.estimates.of(self._current.method, self._current.bits)
            if guess is None:
                return None
            total += max(guess - (time.perf_counter() - self._trial_start), 0.0)
        for method, bits in items:
            guess = self.estimates.of(method, bits)
            if guess is None:
                return None
            total += guess
        return total

    def _status(self) -> str:
        eta = self.eta()
        text = "ETA " + ("?" if eta is None else duration(eta))
        if self._current is not None:
            text = f"{self._current.label} {duration(time.perf_counter() - self._trial_start)}, " + text
        return text

    def _tick(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            bar = self._bar
            if bar is not None:
                bar.set_postfix_str(self._status(), refresh=True)

    def trial_started(self, trial: Any) -> None:
        self._trial_start = time.perf_counter()
        self._current = trial
        key = (trial.method, trial.bits)
        if key in self._queue:
            self._queue.remove(key)
        if self._bar is not None and self.live:
            self._bar.set_postfix_str(self._status())
            if self._ticker is None:
                self._ticker = threading.Thread(target=self._tick, name="hashbench-progress", daemon=True)
                self._ticker.start()
        elif self._bar is not None:
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
        if outcome.status != "SKIPPED":
            seconds = getattr(outcome, "seconds", 0.0) or (time.perf_counter() - self._trial_start)
            self.estimates.record(outcome.trial.method, seconds, getattr(outcome.trial, "bits", None))
            self._current = None
            if self.live and index < self.total and (self._bar is None or not self.interactive):
                text += f"  ({self._status()})"  # logs and pipes: the ETA on each line
        self._line(text)
        if self._bar is not None:
            self._bar.update(1)
            if self.live:
                self._bar.set_postfix_str(self._status())

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2 * TICK_SECONDS)
            self._ticker = None
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
