"""An append-only journal on local disk, and the shipper that empties it into a sink exactly once.

The inference log (`sandbox.serving.inference_log`) writes every answered request here before the answer
leaves, and ships it to PostgreSQL from here. Nothing in this module knows about the database: a sink is a
callable taking a list of entries, so every rule below is testable without one.

Layout of a journal folder (every file 0600, the folder 0700, whatever the umask):

    lock                  flock(2)ed by the one process that owns the journal (a second one waits, then fails)
    shipped               where shipping stands: {"segment": N, "offset": BYTES} (replaced atomically)
    0000000001.journal    segments, numbered in order; only the newest one is appended to
    ...

A segment is lines. Its first line is a header (what every record of the segment shares: for the inference
log, the model that answered); each further line is one record (one request's rows). A line is
``CRC32 ROWS JSON\\n``: the CRC (8 hex digits) covers ``ROWS JSON``; ROWS is ``H`` on a header line. JSON is
written ASCII-only, so it never holds a raw newline.

Guarantees, and their limits:

- `Journal.append` is one ``write(2)`` on a file opened ``O_APPEND``; when it returns, the bytes are in the
  kernel's page cache and survive the writing process being killed (``kill -9``), and any other process
  dying. There is no fsync: a power loss or a kernel crash may lose the last seconds of records. That is
  the trade: an fsync per request would cost more than serving it.
- A process killed in the middle of a ``write`` leaves at most one line cut short, at the end of its last
  segment. The caller of that write never returned, so that record was never acknowledged: the line is
  skipped (counted, logged), never shipped as garbage. Each process start opens a new segment, so nothing
  is ever appended after a cut line; a line whose CRC does not match is skipped the same way.
- The shipper reads from the ``shipped`` position, hands a batch to the sink, and only then moves the
  position on (temp file + rename). A sink that committed but whose acknowledgement was lost (or a process
  killed between the commit and the rename) sees the same batch again: the sink must be idempotent (the
  inference log keys each row by an event id fixed in the journal, and inserts ``ON CONFLICT DO NOTHING``).
- A segment is closed at ``segment_bytes`` and deleted once shipped up to its end, so while the sink takes
  what it is given the journal stays about one segment long; while the sink is away it grows on disk, and
  only one batch (``max_rows``, about a MiB of reading) is ever in memory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.files import write_private

logger = logging.getLogger("sandbox.inference_log")

SUFFIX = ".journal"
POSITION_NAME = "shipped"
LOCK_NAME = "lock"
HEADER = b"H"
_READ_CHUNK = 1 << 20

Entry = tuple[dict, Any]  # (the segment's header, one record)


class JournalBusy(RuntimeError):
    """Another live process owns this journal."""


@dataclass(frozen=True)
class Position:
    segment: int
    offset: int


@dataclass
class Batch:
    """What `Journal.read` found from the shipped position on: entries to ship, and where shipping stands after."""

    start: Position
    end: Position
    entries: list[Entry] = field(default_factory=list)
    rows: int = 0  # rows in the entries
    skipped_lines: int = 0  # cut short or corrupt: never shipped
    skipped_rows: int = 0  # rows those lines claimed, where that could still be read

    @property
    def moves(self) -> bool:
        return self.end != self.start


def encode_line(rows: int | None, payload: bytes) -> bytes:
    """One journal line: ``rows`` None is a segment header. ``payload`` is ASCII JSON (no raw newline)."""
    body = (b"%d " % rows if rows is not None else HEADER + b" ") + payload
    return b"%08x %s\n" % (zlib.crc32(body), body)


def encode_record(rows: int, record: Any) -> bytes:
    return encode_line(rows, json.dumps(record, separators=(",", ":"), default=str).encode("ascii"))


def _parse(line: bytes) -> tuple[int | None, Any]:
    """(rows, decoded JSON) of one complete line without its newline; ValueError if it is not a sound line."""
    crc, _, body = line.partition(b" ")
    if len(crc) != 8 or int(crc, 16) != zlib.crc32(body):
        raise ValueError("checksum mismatch")
    count, _, payload = body.partition(b" ")
    return (None if count == HEADER else int(count)), json.loads(payload)


def _claimed_rows(line: bytes) -> int:
    """The row count a (possibly damaged) line states, for the pending count; 0 if unreadable."""
    try:
        count = line.split(b" ", 2)[1]
        return 0 if count == HEADER else max(0, int(count))
    except (IndexError, ValueError):
        return 0


class Journal:
    """A folder of segments, appended to by request threads and read by one shipper. Owned by one process."""

    def __init__(self, folder: Path, header: dict, *, segment_bytes: int = 16 << 20, lock_timeout: float = 30.0):
        self.folder = Path(folder)
        self.segment_bytes = segment_bytes
        self._header_line = encode_line(None, json.dumps(header, separators=(",", ":")).encode("ascii"))
        self._lock = threading.Lock()
        self._headers: dict[int, dict | None] = {}
        self._closed = False
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self._lock_fd = self._take_lock(lock_timeout)
        try:
            self._position = self._recover()
            self._pending_at_open = self._count_pending()
            self._appended = 0
            self._consumed = 0
            self._active = max([*self.segments(), self._position.segment - 1]) + 1
            self._fd, self._size = self._create(self._active)
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ---------------------------------------------------------------- opening

    def _take_lock(self, timeout: float) -> int:
        fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise JournalBusy(f"another process holds {self.folder / LOCK_NAME}") from None
                time.sleep(0.1)

    def _recover(self) -> Position:
        """The shipped position from disk; segments before it (shipped, their deletion interrupted) removed."""
        existing = self.segments()
        try:
            saved = json.loads((self.folder / POSITION_NAME).read_text())
            position = Position(int(saved["segment"]), int(saved["offset"]))
        except FileNotFoundError:
            position = Position(existing[0] if existing else 0, 0)
        except (ValueError, KeyError, TypeError):
            # Cannot happen through rename; if it does, ship everything again: the sink drops what it has.
            logger.error("inference log: %s is unreadable; shipping the journal again from its start", POSITION_NAME)
            position = Position(existing[0] if existing else 0, 0)
        for number in existing:
            if number < position.segment:
                self._path(number).unlink(missing_ok=True)
        if position.segment not in existing:  # its segment shipped and deleted: the next one, or the new one
            later = [n for n in existing if n > position.segment]
            position = Position(later[0] if later else max([*existing, position.segment]) + 1, 0)
        return position

    def _count_pending(self) -> int:
        """Rows in complete lines from the shipped position on (a cut last line was never acknowledged)."""
        return _rows_from(self.folder, self.segments(), self._position)

    def _create(self, number: int) -> tuple[int, int]:
        fd = os.open(self._path(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            _write_all(fd, self._header_line, 0)
        except BaseException:
            os.close(fd)
            raise
        self._headers[number] = None  # read back from disk when shipped, like any segment
        return fd, len(self._header_line)

    # ---------------------------------------------------------------- writing

    def append(self, data: bytes, rows: int) -> int:
        """Write complete lines (`encode_record`) in one ``write(2)``; returns the rows now waiting to be shipped.

        On return they survive the process being killed (not a power loss: no fsync). A failed or short
        write is undone (the segment cut back to its last whole line) and raised."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the inference journal is closed")
            self._size = _write_all(self._fd, data, self._size)
            self._appended += rows
            if self._size >= self.segment_bytes:
                self._rotate()
            return self._pending_unlocked()

    def _rotate(self) -> None:
        fd, size = self._create(self._active + 1)
        os.close(self._fd)
        self._fd, self._size, self._active = fd, size, self._active + 1

    # ---------------------------------------------------------------- shipping

    def read(self, max_rows: int) -> Batch:
        """Entries from the shipped position on: at least one record when any is waiting, else at most
        ``max_rows`` rows, within one segment. Nothing moves until `commit`."""
        start = self._position
        with self._lock:
            active, active_size = self._active, self._size
        number = start.segment
        path = self._path(number)
        if number < active:
            try:
                end_of_data = path.stat().st_size
            except FileNotFoundError:
                end_of_data = 0
        else:
            end_of_data = active_size  # only what appends have completed: never a line being written
        if start.offset >= end_of_data:
            if number < active:  # a closed segment shipped to its end: on to the next one
                return Batch(start, Position(self._next_segment(number, active), 0))
            return Batch(start, start)
        batch = Batch(start, start)
        header = self._header(number) if start.offset > 0 else None
        offset = start.offset
        with open(path, "rb") as handle:
            for line, line_end in _lines(handle, offset, end_of_data):
                if not line.endswith(b"\n"):  # cut short by a kill mid-write: it was never acknowledged
                    batch.skipped_lines += 1
                    logger.warning(
                        "inference log: %s ends with a line cut short (%d bytes, a write killed half-way); skipped",
                        path.name,
                        len(line),
                    )
                    offset = line_end
                    break
                try:
                    rows, payload = _parse(line[:-1])
                except ValueError:
                    batch.skipped_lines += 1
                    batch.skipped_rows += _claimed_rows(line)
                    logger.error("inference log: %s has a corrupt line at byte %d; skipped", path.name, offset)
                    offset = line_end
                    continue
                offset = line_end
                if rows is None:
                    header = payload
                    self._headers[number] = payload
                    continue
                if header is None:
                    batch.skipped_lines += 1
                    batch.skipped_rows += rows
                    logger.error("inference log: %s has no readable header; record skipped", path.name)
                    continue
                batch.entries.append((header, payload))
                batch.rows += rows
                if batch.rows >= max_rows:
                    break
        batch.end = Position(number, offset)
        return batch

    def commit(self, batch: Batch) -> None:
        """Shipping now stands at ``batch.end`` (on disk, atomically); segments before it are deleted."""
        if not batch.moves:
            return
        write_private(
            self.folder / POSITION_NAME, json.dumps({"segment": batch.end.segment, "offset": batch.end.offset})
        )
        with self._lock:
            self._position = batch.end
            self._consumed += batch.rows + batch.skipped_rows
        for number in range(batch.start.segment, batch.end.segment):
            self._path(number).unlink(missing_ok=True)
            self._headers.pop(number, None)

    # ---------------------------------------------------------------- state

    @property
    def pending_rows(self) -> int:
        """Rows on disk not yet shipped."""
        with self._lock:
            return self._pending_unlocked()

    def _pending_unlocked(self) -> int:
        return max(0, self._pending_at_open + self._appended - self._consumed)

    @property
    def position(self) -> Position:
        return self._position

    @property
    def active_segment(self) -> int:
        return self._active

    def segments(self) -> list[int]:
        numbers = []
        for path in self.folder.glob("*" + SUFFIX):
            if path.stem.isdigit():
                numbers.append(int(path.stem))
        return sorted(numbers)

    def size_bytes(self) -> int:
        return sum(self._path(n).stat().st_size for n in self.segments() if self._path(n).exists())

    def close(self) -> None:
        """Release the files. Nothing is lost by not calling it: every append is already in the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._fd)
        os.close(self._lock_fd)  # releases the flock

    # ---------------------------------------------------------------- helpers

    def _path(self, number: int) -> Path:
        return self.folder / f"{number:010d}{SUFFIX}"

    def _next_segment(self, number: int, active: int) -> int:
        later = [n for n in self.segments() if number < n <= active]
        return later[0] if later else active

    def _header(self, number: int) -> dict | None:
        if self._headers.get(number) is None:
            with open(self._path(number), "rb") as handle:
                first = handle.readline()
            try:
                rows, payload = _parse(first[:-1]) if first.endswith(b"\n") else (0, None)
            except ValueError:
                rows, payload = 0, None
            self._headers[number] = payload if rows is None else None
        return self._headers[number]


def unshipped_rows(folder: Path) -> int:
    """Rows in a journal folder not yet shipped, read from disk without taking the journal (it may be in use)."""
    folder = Path(folder)
    segments = sorted(int(p.stem) for p in folder.glob("*" + SUFFIX) if p.stem.isdigit())
    try:
        saved = json.loads((folder / POSITION_NAME).read_text())
        position = Position(int(saved["segment"]), int(saved["offset"]))
    except (OSError, ValueError, KeyError, TypeError):
        position = Position(0, 0)
    return _rows_from(folder, segments, position)


def _rows_from(folder: Path, segments: list[int], position: Position) -> int:
    total = 0
    for number in segments:
        if number < position.segment:
            continue
        try:
            with open(folder / f"{number:010d}{SUFFIX}", "rb") as handle:
                handle.seek(position.offset if number == position.segment else 0)
                for line in handle:
                    if line.endswith(b"\n"):
                        total += _claimed_rows(line)
        except FileNotFoundError:  # shipped and deleted meanwhile
            continue
    return total


def _write_all(fd: int, data: bytes, size: int) -> int:
    """Append ``data`` at ``size`` (the file's length) in one write; on failure cut the file back and raise."""
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to the inference journal ({written} of {len(data)} bytes)")
    except BaseException:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
        raise
    return size + written


def _lines(handle, offset: int, end: int) -> Iterator[tuple[bytes, int]]:
    """Lines of ``handle`` between ``offset`` and ``end``, each with the offset just after it; a last piece
    without a newline comes as is. Reads a chunk at a time (more for a line longer than a chunk)."""
    chunk = _READ_CHUNK
    while offset < end:
        handle.seek(offset)
        data = handle.read(min(chunk, end - offset))
        if not data:
            return
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline == -1:
                break
            yield data[start : newline + 1], offset + newline + 1
            start = newline + 1
        if start == 0 and offset + len(data) >= end:  # no newline before the end: a line cut short
            yield data, end
            return
        if start == 0:
            chunk *= 2  # one line longer than the chunk: read more of it
            continue
        offset += start


class Shipper:
    """The thread that empties a journal into a sink, retrying with backoff while the sink fails.

    ``ship(entries)`` must be idempotent for a batch it is handed again (see the module's docstring)."""

    def __init__(
        self,
        journal: Journal,
        ship: Callable[[list[Entry]], None],
        *,
        max_rows: int = 2000,
        interval: float = 0.5,
        min_backoff: float = 0.5,
        max_backoff: float = 5.0,
        on_error: Callable[[BaseException], None] | None = None,
        on_shipped: Callable[[Batch], None] | None = None,
    ):
        self.journal = journal
        self.ship = ship
        self.max_rows = max_rows
        self.interval = interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.on_error = on_error
        self.on_shipped = on_shipped
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name="inference-log-shipper", daemon=True)

    def step(self) -> bool:
        """Ship one batch (or move past a finished segment); True if shipping moved. Raises what the sink raised."""
        batch = self.journal.read(self.max_rows)
        if not batch.moves:
            return False
        if batch.entries:
            self.ship(batch.entries)
        self.journal.commit(batch)
        if self.on_shipped is not None:
            self.on_shipped(batch)
        return True

    def drain(self) -> None:
        """Ship everything appended so far (raises what the sink raises)."""
        while self.step():
            pass

    def run(self) -> None:
        backoff = self.min_backoff
        while True:
            try:
                moved = self.step()
            except Exception as exc:  # noqa: BLE001 - a sink failure is retried, never raised into serving
                if self.on_error is not None:
                    self.on_error(exc)
                logger.warning(
                    "inference log: shipping failed (%s); %d row(s) kept in the journal, retried in %.1fs",
                    exc,
                    self.journal.pending_rows,
                    backoff,
                )
                if self._stopping.is_set():
                    return  # stopping: what is not shipped stays in the journal for the next start
                self._stopping.wait(backoff)  # a stop request cuts the wait short: one more try, then out
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = self.min_backoff
            if moved:
                continue
            if self._stopping.is_set():
                return
            self._wake.wait(self.interval)
            self._wake.clear()

    def start(self) -> Shipper:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float) -> bool:
        """Ship what can be shipped within ``timeout``; True if the thread finished."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()
