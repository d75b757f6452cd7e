"""The inference log's on-disk journal and its shipper, with a stand-in for the database.

The database here is `FakeTable`: rows keyed by event id, inserted ON CONFLICT DO NOTHING like the real
table, and able to lose an acknowledgement (commit, then raise). Shipping to the real PostgreSQL, and kill -9
of real servers, are in tests/faults/test_inference_log_durability.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sandbox.serving import inference_log as inference_log_module
from sandbox.serving import journal as journal_module
from sandbox.serving.inference_log import (
    JOURNAL_DIR,
    SHIPPER_ENV,
    SPOOL_NAME,
    InferenceLogWriter,
    LoggedModel,
    PostgresSink,
    shipper_from_env,
)
from sandbox.serving.journal import (
    Journal,
    JournalBusy,
    JournalReader,
    encode_record,
    unshipped_rows,
)
from sandbox.serving.shipping import Shipper, ShipperGroup

HEADER = {"deployment": "dep", "model_name": "model", "model_version": "7"}
MODEL = LoggedModel("dep", "model", "7")
NO_DATABASE = "postgresql://u:p@127.0.0.1:9/monitoring"  # never reached: the tests replace _write


class FakeTable:
    """The inference_log table as the shipper sees it: INSERT ... ON CONFLICT (event_id) DO NOTHING."""

    def __init__(self, lose_acks: int = 0, fail: int = 0):
        self.rows: dict[str, tuple] = {}
        self.attempts: list[list[str]] = []  # event ids of each batch handed over
        self.lose_acks = lose_acks  # commit, then raise: the acknowledgement is lost
        self.fail = fail  # raise without committing

    def write(self, rows) -> None:
        self.attempts.append([row[0] for row in rows])
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the database is away")
        for row in rows:
            self.rows.setdefault(row[0], row)
        if self.lose_acks:
            self.lose_acks -= 1
            raise ConnectionError("connection lost before the commit was acknowledged")


def _writer(folder: Path, table: FakeTable | None = None, **options) -> InferenceLogWriter:
    writer = InferenceLogWriter(NO_DATABASE, MODEL, spool_dir=folder, metrics_registry=CollectorRegistry(), **options)
    if table is not None:
        writer._write = table.write
    return writer


def _log(writer: InferenceLogWriter, request: int, rows: int = 3) -> None:
    writer.log(
        np.full((rows, 2), float(request)),
        np.arange(rows) % 2,
        request_id=f"r{request}",
        variant="a" if request % 2 else None,
    )


def _records(folder: Path) -> list:
    """Every record shipped from a journal folder, through a list sink (the journal alone, no writer)."""
    shipped: list = []
    journal = Journal(folder, HEADER)
    try:
        shipper = Shipper(JournalReader(journal.folder), shipped.extend)
        shipper.drain()
        shipper.close()
    finally:
        journal.close()
    return shipped


def _segment_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.journal"))


# ------------------------------------------------------------------ the journal alone


def test_appended_records_come_back_in_order_with_their_header(tmp_path):
    journal = Journal(tmp_path, HEADER)
    for n in range(5):
        journal.append(encode_record(2, {"n": n}), 2)
    assert journal.pending_rows == 10
    shipped: list = []
    Shipper(JournalReader(journal.folder), shipped.extend).drain()
    assert shipped == [(HEADER, {"n": n}) for n in range(5)]
    assert journal.pending_rows == 0
    journal.close()


def test_shipping_resumes_from_the_durable_offset_after_a_restart(tmp_path):
    journal = Journal(tmp_path, HEADER)
    for n in range(10):
        journal.append(encode_record(1, n), 1)
    shipped: list = []
    shipper = Shipper(JournalReader(journal.folder), shipped.extend, max_rows=4)
    assert shipper.step() and shipper.step()  # 8 of 10 shipped, then the process goes away
    journal.close()
    shipper.close()
    saved = json.loads((tmp_path / "shipped").read_text())
    assert saved["segment"] == 1 and saved["offset"] > 0

    assert unshipped_rows(tmp_path) == 2  # read from disk as another process would
    reopened = Journal(tmp_path, HEADER)
    assert reopened.pending_rows == 2  # counted from disk, from the offset on
    reopened.append(encode_record(1, 10), 1)
    Shipper(JournalReader(reopened.folder), shipped.extend).drain()
    assert [record for _, record in shipped] == list(range(11))  # each once, in order
    reopened.close()


def test_a_line_cut_short_by_a_kill_is_skipped_and_does_not_block_later_rows(tmp_path):
    journal = Journal(tmp_path, HEADER)
    journal.append(encode_record(1, "before"), 1)
    journal.close()
    whole = encode_record(1, "never acknowledged")
    with _segment_files(tmp_path)[-1].open("ab") as handle:
        handle.write(whole[: len(whole) // 2])  # a write killed half-way

    registry = CollectorRegistry()
    reopened = Journal(tmp_path, HEADER)
    assert reopened.pending_rows == 1  # the cut line is not counted: it was never acknowledged
    reopened.append(encode_record(1, "after"), 1)  # appended by the next process
    shipped: list = []
    skipped = []
    shipper = Shipper(
        JournalReader(reopened.folder), shipped.extend, on_shipped=lambda batch: skipped.append(batch.skipped_lines)
    )
    shipper.drain()
    assert [record for _, record in shipped] == ["before", "after"]
    assert sum(skipped) == 1
    assert reopened.pending_rows == 0
    reopened.close()
    del registry


def test_a_corrupt_line_is_skipped_not_shipped(tmp_path):
    journal = Journal(tmp_path, HEADER)
    journal.append(encode_record(1, "first"), 1)
    journal.close()
    bad = bytearray(encode_record(1, "flipped"))
    bad[-3] ^= 0x01  # one bit changed inside the JSON: the CRC no longer matches
    with _segment_files(tmp_path)[-1].open("ab") as handle:
        handle.write(bytes(bad) + encode_record(1, "third"))
    assert [record for _, record in _records(tmp_path)] == ["first", "third"]


def test_segments_rotate_at_the_size_bound_and_shipped_ones_are_deleted(tmp_path):
    journal = Journal(tmp_path, HEADER, segment_bytes=300)
    shipped: list = []
    shipper = Shipper(JournalReader(journal.folder), shipped.extend)
    for n in range(40):
        journal.append(encode_record(1, {"n": n, "pad": "x" * 40}), 1)
    assert len(_segment_files(tmp_path)) > 5  # rotated: nothing shipped yet, the journal grows on disk
    shipper.drain()
    assert [record["n"] for _, record in shipped] == list(range(40))
    assert [path.name for path in _segment_files(tmp_path)] == [f"{journal.active_segment:010d}.journal"]

    # Shipping as it goes, the journal stays about one segment long.
    for n in range(40, 200):
        journal.append(encode_record(1, {"n": n, "pad": "x" * 40}), 1)
        shipper.drain()
        assert len(_segment_files(tmp_path)) <= 2
    assert [record["n"] for _, record in shipped] == list(range(200))
    journal.close()


def test_segments_a_killed_process_left_are_shipped_then_deleted_and_a_new_segment_is_started(tmp_path):
    first = Journal(tmp_path, {"model_version": "1"})
    first.append(encode_record(1, "from v1"), 1)
    first.close()
    second = Journal(tmp_path, {"model_version": "2"})  # a redeploy of another version, same folder
    second.append(encode_record(1, "from v2"), 1)
    assert len(_segment_files(tmp_path)) == 2
    shipped: list = []
    Shipper(JournalReader(second.folder), shipped.extend).drain()
    assert shipped == [({"model_version": "1"}, "from v1"), ({"model_version": "2"}, "from v2")]
    assert len(_segment_files(tmp_path)) == 1
    second.close()


def test_a_batch_whose_acknowledgement_was_lost_is_shipped_again_and_lands_once(tmp_path):
    table = FakeTable(lose_acks=1)
    writer = _writer(tmp_path, table)
    for request in range(4):
        _log(writer, request)
    with pytest.raises(ConnectionError):
        writer._shipper.step()  # the rows were committed, the answer never came
    assert writer.pending_rows == 12  # so the offset did not move
    assert writer._shipper.step()
    assert table.attempts[0] == table.attempts[1]  # the same batch, the same event ids
    assert len(table.rows) == 12 and writer.pending_rows == 0
    writer.close()


def test_a_kill_between_the_commit_and_the_offset_update_writes_no_row_twice(tmp_path):
    table = FakeTable()
    writer = _writer(tmp_path, table)
    for request in range(5):
        _log(writer, request)
    assert writer.reader.acquire()
    batch = writer.reader.read(1000)
    writer._ship(batch.entries)  # committed to the table; the process dies before the position moves
    writer.journal.close()
    writer.reader.release()

    restarted = _writer(tmp_path, table)
    assert restarted.pending_rows == 15
    restarted._shipper.drain()
    assert table.attempts[0] == table.attempts[1]
    assert len(table.rows) == 15
    assert sorted(row[6] for row in table.rows.values()) == sorted(f"r{n}" for n in range(5) for _ in range(3))
    restarted.close()


def test_the_shipper_thread_retries_a_failing_database_and_ships_everything_once(tmp_path):
    table = FakeTable(fail=3, lose_acks=1)
    writer = _writer(tmp_path, table, flush_interval=0.01)
    writer._shipper.min_backoff = writer._shipper.max_backoff = 0.01
    done = threading.Event()
    write = table.write

    def write_then_signal(rows):
        write(rows)
        if len(table.rows) == 30:
            done.set()

    writer._write = write_then_signal
    for request in range(10):
        _log(writer, request)
    writer.start()
    assert done.wait(30), f"not all rows shipped: {len(table.rows)}"
    writer.close(timeout=30)
    assert len(table.rows) == 30 and writer.pending_rows == 0
    registry_errors = writer._metrics.write_errors._value.get()
    assert registry_errors == 4  # three refusals and one lost acknowledgement, each retried


def test_close_with_the_database_away_keeps_the_rows_for_the_next_start(tmp_path):
    away = FakeTable(fail=10**9)
    writer = _writer(tmp_path, away).start()
    for request in range(5):
        _log(writer, request)
    writer.close(timeout=30)  # the stop request cuts the backoff short: one more try, then out
    assert away.rows == {} and writer.pending_rows == 15

    table = FakeTable()
    restarted = _writer(tmp_path, table)
    assert restarted.pending_rows == 15
    restarted._shipper.drain()
    assert sorted(row[6] for row in table.rows.values()) == sorted(f"r{n}" for n in range(5) for _ in range(3))
    restarted.close()


# ------------------------------------------------------------------ the writer's request path


def test_log_is_one_write_per_request_and_rows_carry_their_model_and_event_ids(tmp_path, monkeypatch):
    writer = _writer(tmp_path, table := FakeTable())
    writes = []
    real_write = os.write
    monkeypatch.setattr(journal_module.os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))
    writer.log(np.arange(6, dtype=float).reshape(3, 2), np.array([1, 0, 1]), request_id="req", variant="b")
    assert len(writes) == 1 and writes[0].count(b"\n") == 1  # the request's three rows, one line, one write
    monkeypatch.undo()
    writer._shipper.drain()
    rows = sorted(table.rows.values(), key=lambda row: row[7])
    assert [row[2:7] for row in rows] == [("dep", "model", "7", "b", "req")] * 3
    assert [row[7] for row in rows] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert [row[8] for row in rows] == ["1", "0", "1"]
    assert len({row[0] for row in rows}) == 3
    writer.close()


def test_a_journal_of_an_older_server_one_request_a_record_is_shipped_as_it_was_written(tmp_path):
    """Journals left by servers from before batch records (one record a request) still ship, ids unchanged."""
    base = "0123456789abcdef0000000100000000"
    journal = Journal(tmp_path / JOURNAL_DIR, HEADER)
    journal.append(encode_record(2, [1_700_000_000_000_000, "old", "a", base, [[1.0, 2.0], [3.0, 4.0]], [0, 1]]), 2)
    journal.close()
    writer = _writer(tmp_path, table := FakeTable())
    writer._shipper.drain()
    rows = sorted(table.rows.values(), key=lambda row: row[7])
    assert [row[0] for row in rows] == [str(uuid.UUID(int=uuid.UUID(base).int ^ i)) for i in range(2)]
    assert [row[2:9] for row in rows] == [
        ("dep", "model", "7", "a", "old", [1.0, 2.0], "0"),
        ("dep", "model", "7", "a", "old", [3.0, 4.0], "1"),
    ]
    writer.close()


def test_event_ids_are_unique_across_requests_and_restarts_with_no_random_read_per_request(tmp_path, monkeypatch):
    table = FakeTable()
    for start in range(2):  # a restart draws a new prefix: the counter starts again, the ids do not repeat
        writer = _writer(tmp_path, table)
        reads: list[int] = []

        def urandom(n: int, reads=reads, real=inference_log_module.os.urandom) -> bytes:
            reads.append(n)
            return real(n)

        monkeypatch.setattr(inference_log_module.os, "urandom", urandom)
        for request in range(300):
            _log(writer, request, rows=3)
        monkeypatch.undo()
        assert reads == []  # per request, nothing from the kernel's random source (uuid4 read it every time)
        writer._shipper.drain()
        writer.close()
        assert len(table.rows) == 900 * (start + 1)  # keyed by event id: none collided
    assert all(len(event_id) == 36 for event_id in table.rows)


def test_a_nan_prediction_is_shipped_as_null_not_as_json_postgresql_refuses(tmp_path):
    writer = _writer(tmp_path, table := FakeTable())
    writer.log(np.zeros((2, 2)), np.array([np.nan, 1.5]), request_id="nan", variant=None)
    writer._shipper.drain()
    assert sorted(row[8] for row in table.rows.values()) == ["1.5", "null"]
    writer.close()


def test_an_acknowledged_row_survives_a_kill_9_of_the_writing_process(tmp_path):
    """A real SIGKILL right after log() returns: no close(), no flush, no atexit."""
    script = f"""
import os, pathlib, signal
import numpy as np
from prometheus_client import CollectorRegistry
from sandbox.serving.inference_log import InferenceLogWriter, LoggedModel
model = LoggedModel("dep", "model", "7")
folder = pathlib.Path({str(tmp_path)!r})
writer = InferenceLogWriter({NO_DATABASE!r}, model, spool_dir=folder, metrics_registry=CollectorRegistry())
for n in range(100):
    writer.log(np.full((2, 3), float(n)), np.array([n, n]), request_id=f"r{{n}}", variant=None)
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    table = FakeTable()
    writer = _writer(tmp_path, table)
    assert writer.pending_rows == 200
    writer._shipper.drain()
    assert sorted(row[6] for row in table.rows.values()) == sorted(f"r{n}" for n in range(100) for _ in range(2))
    writer.close()


def test_a_write_that_fails_is_undone_and_raised_so_the_request_is_not_answered(tmp_path, monkeypatch):
    table = FakeTable()
    writer = _writer(tmp_path, table)
    _log(writer, 0)
    real_write = os.write

    def disk_full(fd, data):
        real_write(fd, data[:10])  # part of the line reached the file, then the disk filled up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", disk_full)
    with pytest.raises(OSError, match="No space"):
        _log(writer, 1)
    monkeypatch.undo()
    _log(writer, 2)
    writer._shipper.drain()
    assert sorted({row[6] for row in table.rows.values()}) == ["r0", "r2"]
    assert writer._metrics.skipped._value.get() == 0  # cut back: no half line left in the file
    writer.close()


def test_pending_rows_counts_rows_on_disk_and_the_gauge_follows(tmp_path):
    registry = CollectorRegistry()
    writer = InferenceLogWriter(NO_DATABASE, MODEL, spool_dir=tmp_path, metrics_registry=registry)
    writer._write = FakeTable().write
    for request in range(4):
        _log(writer, request, rows=5)
    assert writer.pending_rows == 20
    assert registry.get_sample_value("inference_log_pending_rows") == 20
    assert registry.get_sample_value("inference_log_rows_spooled_total") == 20
    writer._shipper.drain()
    assert registry.get_sample_value("inference_log_pending_rows") == 0
    assert registry.get_sample_value("inference_log_rows_written_total") == 20
    writer.close()


# ------------------------------------------------------------------ files and ownership


def test_journal_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        writer = _writer(tmp_path, FakeTable())
        _log(writer, 0)
        writer._shipper.drain()
        writer.close()
    finally:
        os.umask(old)
    folder = tmp_path / JOURNAL_DIR
    assert folder.stat().st_mode & 0o777 == 0o700
    files = list(folder.iterdir())
    assert {path.name for path in files} >= {"lock", "shipped"} and any(p.suffix == ".journal" for p in files)
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in files)


def test_a_second_process_cannot_take_a_journal_in_use(tmp_path):
    journal = Journal(tmp_path, HEADER)
    with pytest.raises(JournalBusy):
        Journal(tmp_path, HEADER, lock_timeout=0)
    journal.close()
    Journal(tmp_path, HEADER, lock_timeout=0).close()  # free again once the owner is gone


def test_an_old_spool_is_replayed_with_its_event_ids_then_removed(tmp_path):
    first_id, second_id = "0b0e8f36-5d35-4f2c-9d7c-2f1f5a0d0001", "0b0e8f36-5d35-4f2c-9d7c-2f1f5a0d0002"
    spooled = [
        [first_id, "2026-01-02T03:04:05.123456+00:00", "old", "model", "3", "a", "r1", [1.0, 2.0], json.dumps(1)],
        [second_id, "2026-01-02T03:04:06+00:00", "old", "model", "3", None, None, [3.0, 4.0], json.dumps("no")],
    ]
    text = "".join(json.dumps(line) + "\n" for line in spooled) + '["cut-short", "2026-'
    (tmp_path / SPOOL_NAME).write_text(text)
    table = FakeTable()
    writer = _writer(tmp_path, table)
    assert not (tmp_path / SPOOL_NAME).exists()
    writer._shipper.drain()
    rows = [table.rows[line[0]] for line in spooled]
    assert [row[2:] for row in rows] == [tuple(line[2:]) for line in spooled]  # model, variant, id, features, value
    assert rows[0][1].isoformat() == "2026-01-02T03:04:05.123456+00:00"
    assert len(table.rows) == 2
    writer.close()


# ------------------------------------------------------------------ any sequence of events


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("log"), st.integers(1, 4)),
            st.tuples(st.sampled_from(["ship", "lost-ack", "refused", "kill", "kill-mid-write", "kill-after-commit"])),
        ),
        max_size=40,
    )
)
def test_any_sequence_of_requests_kills_and_failures_lands_every_row_exactly_once(events):
    table = FakeTable()
    acknowledged: list[str] = []  # request ids whose log() returned (so: answered)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        writer = _writer(folder, table, batch_rows=3, segment_bytes=400)
        for number, event in enumerate(events):
            kind = event[0]
            if kind == "log":
                writer.log(np.zeros((event[1], 2)), np.zeros(event[1]), request_id=f"q{number}", variant=None)
                acknowledged.extend([f"q{number}"] * event[1])
            elif kind in ("ship", "lost-ack", "refused"):
                table.lose_acks, table.fail = kind == "lost-ack", kind == "refused"
                try:
                    writer._shipper.step()
                except ConnectionError:
                    pass
                table.lose_acks = table.fail = 0
            elif kind == "kill-after-commit":
                writer.reader.acquire()
                batch = writer.reader.read(writer.batch_rows)
                if batch.entries:
                    writer._ship(batch.entries)
                writer.journal.close()
                writer.reader.release()
                writer = _writer(folder, table, batch_rows=3, segment_bytes=400)
            else:  # a kill; mid-write: half a line that log() never returned for
                writer.journal.close()
                writer.reader.release()
                if kind == "kill-mid-write":
                    line = encode_record(1, [0, "never", None, "0" * 32, [[0.0, 0.0]], [0.0]])
                    with _segment_files(folder / JOURNAL_DIR)[-1].open("ab") as handle:
                        handle.write(line[: len(line) // 2])
                writer = _writer(folder, table, batch_rows=3, segment_bytes=400)
        table.lose_acks = table.fail = 0
        writer._shipper.drain()
        assert writer.pending_rows == 0
        writer.close()
        assert len(_segment_files(folder / JOURNAL_DIR)) == 1
    assert sorted(row[6] for row in table.rows.values()) == sorted(acknowledged)


# ------------------------------------------------------------------ shipping from another process (the supervisor)


class ListSink:
    """The sink of a `ShipperGroup`: keeps (header, record) pairs; refuses while ``fail`` is set."""

    def __init__(self):
        self.entries: list = []
        self.fail = False
        self.calls = 0

    def __call__(self, entries) -> None:
        self.calls += 1
        if self.fail:
            raise ConnectionError("the database is away")
        self.entries.extend(entries)


def _journals(root: Path) -> list[Path]:
    return sorted(path for path in root.glob("*/journal") if path.is_dir())


def test_one_group_ships_every_journal_and_picks_up_new_and_removed_ones(tmp_path):
    sink = ListSink()
    group = ShipperGroup(lambda: _journals(tmp_path), sink, max_rows=2)
    a = Journal(tmp_path / "a" / "journal", {"deployment": "a"})
    b = Journal(tmp_path / "b" / "journal", {"deployment": "b"})
    for n in range(5):
        a.append(encode_record(1, f"a{n}"), 1)
        b.append(encode_record(1, f"b{n}"), 1)
    assert group.step()  # one batch of each per round: a busy journal does not hold back the others
    assert sorted(record for _, record in sink.entries) == ["a0", "a1", "b0", "b1"]
    group.drain()
    assert a.pending_rows == b.pending_rows == 0  # each writer sees the group's saved position

    c = Journal(tmp_path / "c" / "journal", {"deployment": "c"})  # a deployment that appears later
    c.append(encode_record(1, "c0"), 1)
    a.append(encode_record(1, "a5"), 1)
    group.drain()
    shipped = [(header["deployment"], record) for header, record in sink.entries]
    assert sorted(shipped) == sorted(
        [("a", f"a{n}") for n in range(6)] + [("b", f"b{n}") for n in range(5)] + [("c", "c0")]
    )

    # Undeployed: the server stopped, its folder kept. Its last rows are still shipped.
    b.append(encode_record(1, "b-last"), 1)
    b.close()
    group.drain()
    assert ({"deployment": "b"}, "b-last") in sink.entries
    # A folder removed: its shipper lets it go (no lock left open on it).
    import shutil

    shutil.rmtree(tmp_path / "c")
    group.step()
    assert set(group.shippers) == {tmp_path / "a" / "journal", tmp_path / "b" / "journal"}
    group.close()
    a.close()
    c.close()
    assert len(sink.entries) == len(set(map(repr, sink.entries)))  # nothing twice


def test_a_failing_sink_keeps_every_journal_on_disk_and_ships_it_once_it_recovers(tmp_path):
    sink = ListSink()
    sink.fail = True
    errors: list = []
    group = ShipperGroup(
        lambda: _journals(tmp_path), sink, interval=0.01, min_backoff=0.01, max_backoff=0.02, on_error=errors.append
    )
    writers = [Journal(tmp_path / name / "journal", {"deployment": name}, segment_bytes=200) for name in "ab"]
    for n in range(30):
        for writer in writers:
            writer.append(encode_record(1, [n, "x" * 40]), 1)
    group.start()
    deadline = time.monotonic() + 10
    while len(errors) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(errors) >= 3 and sink.entries == []
    assert all(writer.pending_rows == 30 for writer in writers)
    assert all(len(list(writer.folder.glob("*.journal"))) > 3 for writer in writers)  # grown on disk, none deleted
    sink.fail = False
    deadline = time.monotonic() + 10
    while any(writer.pending_rows for writer in writers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert group.stop(10)
    group.close()
    for name, writer in zip("ab", writers, strict=True):
        assert [record[0] for header, record in sink.entries if header["deployment"] == name] == list(range(30))
        assert [p.stem for p in writer.folder.glob("*.journal")] == [f"{writer.active_segment:010d}"]
        writer.close()


def test_the_shipper_never_skips_a_line_being_written_nor_deletes_the_writers_segment(tmp_path):
    writer = Journal(tmp_path, HEADER)
    writer.append(encode_record(1, "whole"), 1)
    line = encode_record(1, "in flight")
    segment = _segment_files(tmp_path)[-1]
    with segment.open("ab") as handle:  # the first half of a write(2) another process is still in
        handle.write(line[:10])
    shipped: list = []
    shipper = Shipper(JournalReader(tmp_path), shipped.extend)
    shipper.drain()
    assert [record for _, record in shipped] == ["whole"]  # the writer lives: the half line is waited for
    assert segment.exists()
    with segment.open("ab") as handle:
        handle.write(line[10:])
    shipper.drain()
    assert [record for _, record in shipped] == ["whole", "in flight"]
    assert segment.exists() and writer.pending_rows == 0  # shipped to its end, still the writer's: kept
    writer.close()
    shipper.close()


def test_a_journal_another_shipper_holds_is_left_alone(tmp_path):
    writer = Journal(tmp_path, HEADER)
    writer.append(encode_record(1, "once"), 1)
    first, second = [], []
    owner = Shipper(JournalReader(tmp_path), first.extend)
    owner.drain()
    writer.append(encode_record(1, "twice?"), 1)
    other = Shipper(JournalReader(tmp_path), second.extend)
    assert not other.step() and second == []  # the model server ships it itself: the supervisor keeps off
    owner.close()
    other.drain()  # let go (the server stopped): taken over from the saved position
    assert [r for _, r in first] == ["once"] and [r for _, r in second] == ["twice?"]
    other.close()
    writer.close()


def test_a_writer_that_does_not_ship_has_no_thread_and_no_connection_and_its_gauge_follows_the_shipper(tmp_path):
    registry = CollectorRegistry()
    writer = InferenceLogWriter(NO_DATABASE, MODEL, spool_dir=tmp_path, metrics_registry=registry, ship=False)
    writer.start()
    for request in range(4):
        _log(writer, request, rows=5)
    assert writer._shipper is None and writer.sink._conn is None
    assert not any(thread.name.startswith("inference-log") for thread in threading.enumerate())
    assert registry.get_sample_value("inference_log_pending_rows") == 20
    assert registry.get_sample_value("inference_log_rows_written_total") is None  # counted by the supervisor
    table = FakeTable()
    group = ShipperGroup(lambda: [tmp_path / JOURNAL_DIR], lambda entries: table.write(PostgresSink.rows(entries)))
    group.drain()  # as the supervisor's process would
    assert registry.get_sample_value("inference_log_pending_rows") == 0
    assert sorted(row[6] for row in table.rows.values()) == sorted(f"r{n}" for n in range(4) for _ in range(5))
    writer.close()
    group.close()


def test_who_ships_is_read_from_the_environment_and_checked():
    assert shipper_from_env({}) == "server"
    assert shipper_from_env({SHIPPER_ENV: "supervisor"}) == "supervisor"
    with pytest.raises(ValueError, match=SHIPPER_ENV):
        shipper_from_env({SHIPPER_ENV: "nobody"})


def test_a_partial_batch_waits_for_the_interval_and_a_full_one_goes_again_at_once(tmp_path):
    """A busy server's rows go in one transaction per interval, not one per few rows (each a WAL flush)."""
    journal = Journal(tmp_path / "journal", {"deployment": "d"})
    calls: list[int] = []

    def ship(entries):
        calls.append(len(entries))
        if len(calls) == 3:  # traffic goes on while the partial batch is shipped
            journal.append(encode_record(1, "during"), 1)

    shipper = Shipper(JournalReader(journal.folder), ship, max_rows=3, interval=60)
    for n in range(7):  # two full batches and one partial
        journal.append(encode_record(1, f"r{n}"), 1)
    shipper.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # a loop that went again after the partial batch would have shipped "during" by now
        assert calls == [3, 3, 1] and not shipper.more_waiting
        shipper.wake()  # what a writer does once a full batch is waiting
        deadline = time.monotonic() + 10
        while len(calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls == [3, 3, 1, 1]
    finally:
        shipper.stop(timeout=5)
        shipper.close()
        journal.close()


def test_a_stop_ships_everything_appended_before_it_partial_batches_too(tmp_path):
    """A writer that logs and closes at once: its shipper, stopped in the middle of a partial batch, goes on."""
    journal = Journal(tmp_path / "journal", {"deployment": "d"})
    calls: list[int] = []
    shipper = Shipper(JournalReader(journal.folder), calls.append, max_rows=5, interval=60)
    journal.append(encode_record(1, "first"), 1)
    shipping = threading.Event()
    release = threading.Event()

    def ship(entries):
        calls.append(len(entries))
        if len(calls) == 1:  # the first, partial batch: the writer appends more and stops the shipper meanwhile
            shipping.set()
            release.wait(10)

    shipper.ship = ship
    calls.clear()
    shipper.start()
    assert shipping.wait(10)
    for n in range(3):
        journal.append(encode_record(1, f"r{n}"), 1)
    stopper = threading.Thread(target=shipper.stop, args=(10,))
    stopper.start()
    deadline = time.monotonic() + 10
    while not shipper._stopping.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    stopper.join(15)
    shipper.close()
    assert calls == [1, 3] and journal.pending_rows == 0
    journal.close()


def test_a_shipping_thread_can_run_at_a_lower_priority_than_the_rest_of_its_process():
    group = ShipperGroup(lambda: [], ListSink(), interval=60, nice=7)
    group.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.getpriority(os.PRIO_PROCESS, group._thread.native_id) < 7:
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, group._thread.native_id) == max(7, os.nice(0))
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == os.nice(0)  # this thread: unchanged
    finally:
        group.stop(timeout=5)
        group.close()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=5),
        min_size=1,
        max_size=6,
    )
)
def test_a_batch_record_ships_every_request_s_rows_exactly_as_logged(request_rows):
    """Whatever the numbers (NaN, infinities, -0.0) and widths (the same for all, or not): each row comes out of
    the journal as it went in, tagged with its own request, with its own event id."""
    with tempfile.TemporaryDirectory() as folder:
        writer = _writer(Path(folder), table := FakeTable())
        requests = [
            inference_log_module.LoggedRequest(np.array([row], dtype=float), np.array([n]), f"q{n}", "v")
            for n, row in enumerate(request_rows)
        ]
        writer.log_requests(requests)
        writer._shipper.drain()
        writer.close()
    shipped = sorted(table.rows.values(), key=lambda row: row[6])
    assert [row[6] for row in shipped] == [f"q{n}" for n in range(len(request_rows))]
    for row, sent in zip(shipped, request_rows, strict=True):
        assert np.array_equal(np.array(row[7], dtype=float), np.array(sent, dtype=float), equal_nan=True)
        # -0.0 stays negative (a NaN's sign is no number's, and JSON, for rows of different widths, has none)
        assert [np.signbit(x) for x in row[7] if not np.isnan(x)] == [np.signbit(x) for x in sent if not np.isnan(x)]
    assert len({row[0] for row in shipped}) == len(request_rows)
