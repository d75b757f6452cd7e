"""An append-only journal on local disk, and its reader, which a shipper (`sandbox.serving.shipping`) empties
into a sink exactly once.

The inference log (`sandbox.serving.inference_log`) writes every answered request here before the answer
leaves, and ships it to PostgreSQL from here. Nothing in this module knows about the database: a sink is a
callable taking a list of entries, so every rule below is testable without one.

Two roles, which may live in two processes: the writer (`Journal`, the model server) appends; the shipper
(`JournalReader` driven by a `Shipper`, in the model server or in the supervisor: `ShipperGroup` ships every
journal of a sandbox from one process) reads, moves the ``shipped`` position and deletes shipped segments.

Layout of a journal folder (every file 0600, the folder 0700, whatever the umask):

    lock                  flock(2)ed by the one live writer (a second one waits, then fails)
    ship.lock             flock(2)ed by the one shipper (another one leaves the journal alone)
    shipped               where shipping stands: {"segment": N, "offset": BYTES, "rows": ROWS before OFFSET in N}
                          (written by the shipper only, replaced atomically)
    0000000001.journal    segments, numbered in order; only the newest one is appended to
    ...

A segment is lines. Its first line is a header (what every record of the segment shares: for the inference
log, the model that answered); each further line is one record (for the inference log, one micro-batch's
requests and their rows). A line is
``CRC32 ROWS JSON\\n``: the CRC (8 hex digits) covers ``ROWS JSON``; ROWS is ``H`` on a header line. JSON is
written ASCII-only, so it never holds a raw newline.

Guarantees, and their limits:

- `Journal.append` is one ``write(2)`` on a file opened ``O_APPEND``; when it returns, the bytes are in the
  kernel's page cache and survive the writing process being killed (``kill -9``), and any other process
  dying. There is no fsync: a power loss or a kernel crash may lose the last seconds of records. That is
  the trade: an fsync per request would cost more than serving it.
- A process killed in the middle of a ``write`` leaves at most one line cut short, at the end of its last
  segment. The caller of that write never returned, so that record was never acknowledged: the line is
  skipped (counted, logged), never shipped as garbage. Each writer start opens a new segment, so nothing
  is ever appended after a cut line; a line whose CRC does not match is skipped the same way.
- A segment is *closed* once a later one exists (the writer creates the next one only after its last write
  to this one, and a new writer starts a new one) or once no writer holds ``lock``. The shipper reads only
  whole lines of a segment still open (a line without its newline may be a ``write`` under way in another
  process: it waits for the rest), skips a cut last line only in a closed segment, moves past a segment only
  to a later one that exists, and deletes only segments before its position: never one a live writer
  appends to.
- The shipper reads from the ``shipped`` position, hands a batch to the sink, and only then moves the
  position on (temp file + rename). A sink that committed but whose acknowledgement was lost (or a shipper
  killed between the commit and the rename) sees the same batch again: the sink must be idempotent (the
  inference log keys each row by an event id fixed in the journal, and inserts ``ON CONFLICT DO NOTHING``).
- A segment is closed at ``segment_bytes`` and deleted once shipped up to its end, so while the sink takes
  what it is given the journal stays about one segment long; while the sink (or the shipper) is away it
  grows on disk, and only one batch (``max_rows``, about a MiB of reading) is ever in memory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.files import write_private

logger = logging.getLogger("sandbox.inference_log")

SUFFIX = ".journal"
POSITION_NAME = "shipped"
LOCK_NAME = "lock"  # the writer's
SHIP_LOCK_NAME = "ship.lock"  # the shipper's
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
    """What `JournalReader.read` found from the shipped position on: entries to ship, where shipping stands after."""

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


# Built once: ``json.dumps`` with options builds an encoder a call, a cost a model server pays per batch.
_ENCODE_JSON = json.JSONEncoder(separators=(",", ":"), default=str).encode


def encode_record(rows: int, record: Any) -> bytes:
    return encode_line(rows, _ENCODE_JSON(record).encode("ascii"))


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


def _segments(folder: Path) -> list[int]:
    return sorted(int(path.stem) for path in folder.glob("*" + SUFFIX) if path.stem.isdigit())


def _segment_path(folder: Path, number: int) -> Path:
    return folder / f"{number:010d}{SUFFIX}"


def _read_position(folder: Path) -> tuple[Position, int | None] | None:
    """The saved position and the rows before it in its segment (None: an older file without them);
    None when there is no readable position file."""
    try:
        saved = json.loads((folder / POSITION_NAME).read_text())
        rows = saved.get("rows")
        return Position(int(saved["segment"]), int(saved["offset"])), (None if rows is None else int(rows))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # Cannot happen through rename; if it does, ship everything again: the sink drops what it has.
        logger.error("inference log: %s is unreadable; shipping the journal again from its start", POSITION_NAME)
        return None


def _take_lock(path: Path, timeout: float) -> int:
    """flock(2) ``path`` exclusively, waiting up to ``timeout`` (0: not at all); JournalBusy if it stays taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise JournalBusy(f"another process holds {path}") from None
            time.sleep(0.1)


def writer_alive(folder: Path) -> bool:
    """Whether a live process holds the journal's writer lock (probed: taken and let go at once, never waited for;
    a writer starting just then waits 0.1 s for it)."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock, if it got it
    return False


class Journal:
    """The writing side: a folder of segments appended to by request threads. One live writer per folder."""

    def __init__(self, folder: Path, header: dict, *, segment_bytes: int = 16 << 20, lock_timeout: float = 30.0):
        self.folder = Path(folder)
        self.segment_bytes = segment_bytes
        self._header_line = encode_line(None, json.dumps(header, separators=(",", ":")).encode("ascii"))
        self._lock = threading.Lock()
        self._closed = False
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self._lock_fd = _take_lock(self.folder / LOCK_NAME, lock_timeout)
        try:
            existing = self.segments()
            saved = _read_position(self.folder)
            # Rows per segment (complete lines: a cut last line was never acknowledged), for `pending_rows`.
            self._rows = {number: _rows_in(self.folder, number) for number in existing}
            self._active = max([*existing, saved[0].segment if saved else 0]) + 1
            self._fd, self._size = self._create(self._active)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _create(self, number: int) -> tuple[int, int]:
        fd = os.open(self._path(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            _write_all(fd, self._header_line, 0)
        except BaseException:
            os.close(fd)
            raise
        self._rows[number] = 0
        return fd, len(self._header_line)

    def append(self, data: bytes, rows: int) -> None:
        """Write complete lines (`encode_record`) in one ``write(2)``.

        On return they survive the process being killed (not a power loss: no fsync). A failed or short
        write is undone (the segment cut back to its last whole line) and raised."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the inference journal is closed")
            self._size = _write_all(self._fd, data, self._size)
            self._rows[self._active] += rows
            if self._size >= self.segment_bytes:
                self._rotate()

    def _rotate(self) -> None:
        # The next segment exists only after the last write to this one: to a shipper, this one is closed.
        fd, size = self._create(self._active + 1)
        os.close(self._fd)
        self._fd, self._size, self._active = fd, size, self._active + 1

    @property
    def pending_rows(self) -> int:
        """Rows on disk not yet shipped: what this writer knows it holds, less what the shipper's saved position
        says is shipped (whichever process ships). Reads the small position file: not for the request path."""
        saved = _read_position(self.folder)
        with self._lock:
            if saved is None:
                return sum(self._rows.values())
            (position, before) = saved
            for number in [n for n in self._rows if n < position.segment]:
                del self._rows[number]  # shipped (and deleted)
            total = sum(rows for number, rows in self._rows.items() if number >= position.segment)
            if position.segment in self._rows:
                total -= before or 0
            return max(0, total)

    @property
    def active_segment(self) -> int:
        return self._active

    def segments(self) -> list[int]:
        return _segments(self.folder)

    def close(self) -> None:
        """Release the files. Nothing is lost by not calling it: every append is already in the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._fd)
        os.close(self._lock_fd)  # releases the flock: to a shipper, the last segment is closed

    def _path(self, number: int) -> Path:
        return _segment_path(self.folder, number)


class JournalReader:
    """The shipping side of a journal folder: reads from the shipped position, moves it, deletes shipped segments.

    Held by one shipper at a time (``ship.lock``): `acquire` takes it without waiting, so a second shipper
    (the supervisor's, while a model server ships its own journal) leaves the journal alone."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._fd: int | None = None
        self._position = Position(0, 0)
        self._before = 0  # rows (shipped or skipped) before the position in its segment
        self._headers: dict[int, dict | None] = {}

    def acquire(self) -> bool:
        """Take the journal for shipping, if no other shipper has it; recovers the position from disk."""
        if self._fd is not None:
            return True
        if not self.folder.is_dir():
            return False
        try:
            fd = _take_lock(self.folder / SHIP_LOCK_NAME, 0)
        except JournalBusy:
            return False
        except FileNotFoundError:  # the folder went meanwhile
            return False
        try:
            self._position, self._before = self._recover()
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._headers.clear()
        return True

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _recover(self) -> tuple[Position, int]:
        """The shipped position from disk; segments before it (shipped, their deletion interrupted) removed."""
        existing = self.segments()
        saved = _read_position(self.folder)
        if saved is None:
            return Position(existing[0] if existing else 0, 0), 0
        position, before = saved
        for number in existing:
            if number < position.segment:
                self._path(number).unlink(missing_ok=True)
        if before is None:  # written by an older shipper: count them
            before = _rows_in(self.folder, position.segment, until=position.offset)
        return position, before

    # ---------------------------------------------------------------- shipping

    def read(self, max_rows: int) -> Batch:
        """Entries from the shipped position on: at least one record when any is waiting, else at most
        ``max_rows`` rows, within one segment. Nothing moves until `commit`."""
        if self._fd is None:
            raise RuntimeError(f"{self.folder} is not acquired for shipping")
        start = self._position
        segments = self.segments()
        later = [n for n in segments if n > start.segment]
        number = start.segment
        if number not in segments:  # shipped and deleted, or never written: on to the next one there is
            return Batch(start, Position(later[0], 0) if later else start)
        # Looked at before the size: a segment closed now stays closed, so its size is final.
        closed = bool(later) or not writer_alive(self.folder)
        path = self._path(number)
        try:
            end_of_data = path.stat().st_size
        except FileNotFoundError:
            end_of_data = 0
        if start.offset >= end_of_data:
            return Batch(start, Position(later[0], 0) if later else start)
        batch = Batch(start, start)
        header = self._header(number) if start.offset > 0 else None
        offset = start.offset
        with open(path, "rb") as handle:
            for line, line_end in _lines(handle, offset, end_of_data):
                if not line.endswith(b"\n"):
                    if not closed:  # maybe a write under way in the writer's process: read it once it is whole
                        break
                    # Cut short by a kill mid-write: it was never acknowledged.
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
        consumed = batch.rows + batch.skipped_rows
        before = self._before + consumed if batch.end.segment == batch.start.segment else consumed
        write_private(
            self.folder / POSITION_NAME,
            json.dumps({"segment": batch.end.segment, "offset": batch.end.offset, "rows": before}),
        )
        self._position, self._before = batch.end, before
        for number in range(batch.start.segment, batch.end.segment):
            self._path(number).unlink(missing_ok=True)
            self._headers.pop(number, None)

    # ---------------------------------------------------------------- state

    @property
    def position(self) -> Position:
        return self._position

    def segments(self) -> list[int]:
        return _segments(self.folder)

    def pending_bytes(self) -> int:
        """Bytes of segments from the position on (cheap: sizes only), for messages."""
        total = 0
        for number in self.segments():
            if number < self._position.segment:
                continue
            try:
                size = self._path(number).stat().st_size
            except FileNotFoundError:
                continue
            total += size - (self._position.offset if number == self._position.segment else 0)
        return max(0, total)

    def _path(self, number: int) -> Path:
        return _segment_path(self.folder, number)

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
    saved = _read_position(folder)
    position = saved[0] if saved else Position(0, 0)
    total = 0
    for number in _segments(folder):
        if number >= position.segment:
            total += _rows_in(folder, number, since=position.offset if number == position.segment else 0)
    return total


def _rows_in(folder: Path, number: int, *, since: int = 0, until: int | None = None) -> int:
    """Rows the complete lines of one segment claim, between two offsets (0 if it is gone)."""
    total = 0
    try:
        with open(_segment_path(folder, number), "rb") as handle:
            handle.seek(since)
            read = since
            for line in handle:
                read += len(line)
                if until is not None and read > until:
                    break
                if line.endswith(b"\n"):
                    total += _claimed_rows(line)
    except FileNotFoundError:  # shipped and deleted meanwhile
        return 0
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
