"""Shipping journals (`sandbox.serving.journal`) to a sink: one journal per thread (`Shipper`, the model server's
own when it ships), or every journal a callable lists through one thread (`ShipperGroup`, the supervisor's).

Both are the same loop (`_Loop`): a step ships at most one batch per journal, again at once while a batch comes
back full (or shipping moved past a segment's end), else after ``interval``, with doubling backoff while the sink
raises. A busy server's rows so go in one transaction per ``interval``, not one per few rows: at a model's
capacity edge each commit (a WAL flush) took CPU the server needed. What the sink did not take stays on
disk; the journal's reader owns the position and deletes what was shipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from sandbox.serving.journal import Batch, Entry, JournalReader

logger = logging.getLogger("sandbox.inference_log")


class _Loop:
    """A thread calling `step` until stopped: again at once while `step` leaves more to ship (``more_waiting``),
    else after ``interval`` (or when woken), with doubling backoff while it raises. What it failed to ship stays
    on disk for the next try."""

    def __init__(
        self,
        *,
        interval: float,
        min_backoff: float,
        max_backoff: float,
        on_error: Callable[[BaseException], None] | None,
        name: str,
        nice: int = 0,
    ):
        self.interval = interval
        self.nice = nice  # > 0: the thread runs at that lower priority (Linux sets it per thread)
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.on_error = on_error
        self.more_waiting = False  # set by `step`: its batch was full, so another is likely there now
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)

    def step(self) -> bool:
        raise NotImplementedError

    def pending_bytes(self) -> int:
        raise NotImplementedError

    def drain(self) -> None:
        """Ship everything appended so far (raises what the sink raises)."""
        while self.step():
            pass

    def run(self) -> None:
        if self.nice > 0:
            with contextlib.suppress(OSError, AttributeError):  # not Linux: the whole process would be reniced
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        backoff = self.min_backoff
        while True:
            try:
                moved = self.step()
            except Exception as exc:  # noqa: BLE001 - a sink failure is retried, never raised into serving
                if self.on_error is not None:
                    self.on_error(exc)
                logger.warning(
                    "inference log: shipping failed (%s); %d byte(s) of journal kept on disk, retried in %.1fs",
                    exc,
                    self.pending_bytes(),
                    backoff,
                )
                if self._stopping.is_set():
                    return  # stopping: what is not shipped stays in the journal for the next start
                self._stopping.wait(backoff)  # a stop request cuts the wait short: one more try, then out
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = self.min_backoff
            if moved and (self.more_waiting or self._stopping.is_set()):
                continue  # a stop ships everything it can first, partial batches too
            if self._stopping.is_set():
                return
            self._wake.wait(self.interval)
            self._wake.clear()

    def start(self):
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float) -> bool:
        """Ship what can be shipped within ``timeout``; True if the thread finished (or never started)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()


class Shipper(_Loop):
    """Empties one journal into a sink: `step` by step, or as a thread retrying with backoff while the sink fails.

    ``ship(entries)`` must be idempotent for a batch it is handed again (see the module's docstring). A journal
    another shipper holds is left alone (`step` moves nothing) until that one lets it go."""

    def __init__(
        self,
        reader: JournalReader,
        ship: Callable[[list[Entry]], None],
        *,
        max_rows: int = 2000,
        interval: float = 0.5,
        min_backoff: float = 0.5,
        max_backoff: float = 5.0,
        on_error: Callable[[BaseException], None] | None = None,
        on_shipped: Callable[[Batch], None] | None = None,
    ):
        super().__init__(
            interval=interval,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            on_error=on_error,
            name="inference-log-shipper",
        )
        self.reader = reader
        self.ship = ship
        self.max_rows = max_rows
        self.on_shipped = on_shipped

    def step(self) -> bool:
        """Ship one batch (or move past a finished segment); True if shipping moved. Raises what the sink raised."""
        self.more_waiting = False
        if not self.reader.acquire():
            return False
        batch = self.reader.read(self.max_rows)
        if not batch.moves:
            return False
        self.more_waiting = batch.rows >= self.max_rows or not batch.entries
        if batch.entries:
            self.ship(batch.entries)
        self.reader.commit(batch)
        if self.on_shipped is not None:
            self.on_shipped(batch)
        return True

    def pending_bytes(self) -> int:
        return self.reader.pending_bytes() if self.reader.held else 0

    def close(self) -> None:
        self.reader.release()


class ShipperGroup(_Loop):
    """Every journal ``folders()`` lists, shipped by one thread through one sink: a `Shipper` per journal.

    The list is read again every round: a journal that appears (a new deployment) is shipped from then on, one
    no longer listed (its folder gone) is let go. A round ships at most one batch of each journal, so a busy
    one does not hold back the others; a sink failure ends the round (the sink is shared), and the journal that
    failed goes last in the next one."""

    def __init__(
        self,
        folders: Callable[[], Iterable[Path]],
        ship: Callable[[list[Entry]], None],
        *,
        max_rows: int = 2000,
        interval: float = 0.5,
        min_backoff: float = 0.5,
        max_backoff: float = 5.0,
        on_error: Callable[[BaseException], None] | None = None,
        on_shipped: Callable[[Path, Batch], None] | None = None,
        nice: int = 0,
    ):
        super().__init__(
            interval=interval,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            on_error=on_error,
            name="inference-log-shippers",
            nice=nice,
        )
        self.folders = folders
        self.ship = ship
        self.max_rows = max_rows
        self.on_shipped = on_shipped
        self.shippers: dict[Path, Shipper] = {}

    def refresh(self) -> None:
        listed = [Path(folder) for folder in self.folders()]
        for folder in listed:
            if folder not in self.shippers:
                self.shippers[folder] = Shipper(
                    JournalReader(folder), self.ship, max_rows=self.max_rows, on_shipped=self._shipped(folder)
                )
        for folder in [f for f in self.shippers if f not in set(listed)]:
            self.shippers.pop(folder).close()

    def _shipped(self, folder: Path) -> Callable[[Batch], None] | None:
        if self.on_shipped is None:
            return None
        on_shipped = self.on_shipped
        return lambda batch: on_shipped(folder, batch)

    def step(self) -> bool:
        """One batch of each journal that has one; True if any moved. Raises the first sink failure."""
        self.refresh()
        moved = self.more_waiting = False
        for folder, shipper in list(self.shippers.items()):
            try:
                if shipper.step():
                    moved = True
                    self.more_waiting = self.more_waiting or shipper.more_waiting
            except Exception:
                self.shippers[folder] = self.shippers.pop(folder)  # last in the next round
                raise
        return moved

    def pending_bytes(self) -> int:
        return sum(shipper.pending_bytes() for shipper in self.shippers.values())

    def close(self) -> None:
        for shipper in self.shippers.values():
            shipper.close()
        self.shippers.clear()
