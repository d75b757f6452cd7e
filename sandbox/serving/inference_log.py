"""Inference logging: every prediction a model server answers, in a PostgreSQL table.

Durable before the answer: `InferenceLogWriter.log_requests` appends a micro-batch's rows (`log`: one request's) to
a journal in the server's folder (`sandbox.serving.journal`: one ``write(2)`` on an ``O_APPEND`` file, no fsync) and
only then does the model server send its answers. A shipper reads the journal from its durable "shipped up to"
position, writes each batch through `PostgresSink`: ``COPY`` into a staging table and ``INSERT ... ON CONFLICT
(event_id) DO NOTHING`` (every row's event id is fixed in the journal, so a batch shipped again after a lost
acknowledgement, or after a kill between the commit and the position's update, lands once), then moves the position
on.

Who ships is chosen when the server starts, by `SHIPPER_ENV`:

- ``server`` (the default; kind/cluster pods, and the local profile with ``supervisor.enabled: false``): a
  `shipping.Shipper` thread inside the model server;
- ``supervisor`` (the local profile while its supervisor runs): the server only appends, and spends no CPU
  and holds no connection for shipping; the supervisor ships every deployment's journal from one thread
  (`ship_journals`, a `shipping.ShipperGroup` of the same `shipping.Shipper`s), undeployed ones' too. While the
  supervisor is down the journals grow on disk; it ships them when `sandbox up` brings it back.

What that guarantees: a ``kill -9`` of the model server, of the shipper's process, of PostgreSQL, or of any of
them in any order, loses no answered row and writes none twice. While PostgreSQL is away the journal grows
on disk (only one batch is in memory) and the shipper retries with backoff, reconnecting by itself; once it
is back, shipped segments are deleted and the journal stays about one segment long. Not guaranteed: a power
loss or a kernel crash may lose the rows of the last seconds (the page cache is not flushed per request;
that would cost more than serving the request).

A spool left by older servers (`SPOOL_NAME`, written at shutdown or over a memory bound) is copied into the
journal at start, with its rows' own event ids, and removed.

It lives with serving, which writes it; monitoring (`InferenceLogStore` in drift checks and traffic replay)
reads it, and the profiles create its table.
"""

from __future__ import annotations

import array
import base64
import itertools
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sandbox.serving.journal import Batch, Entry, Journal, JournalReader, encode_record
from sandbox.serving.shipping import Shipper, ShipperGroup

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger("sandbox.inference_log")

TABLE = "inference_log"
# Created by the stack (PostgreSQL's after-ready step), owned by the application role.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    event_id      uuid PRIMARY KEY,
    ts            timestamptz NOT NULL,
    deployment    text NOT NULL,
    model_name    text NOT NULL,
    model_version text NOT NULL,
    variant       text,
    request_id    text,
    features      double precision[] NOT NULL,
    prediction    jsonb
);
CREATE INDEX IF NOT EXISTS {TABLE}_model_ts ON {TABLE} (model_name, model_version, ts);
"""
COLUMNS = (
    "event_id",
    "ts",
    "deployment",
    "model_name",
    "model_version",
    "variant",
    "request_id",
    "features",
    "prediction",
)
SPOOL_NAME = "inference-spool.jsonl"  # the spool of older servers: replayed (through the journal), then removed
JOURNAL_DIR = "inference-journal"  # the journal's folder, in the server's folder
# Who ships a model server's journal: "server" (its own thread, the default) or "supervisor" (the local
# profile's supervisor process ships every journal of the sandbox; the server only appends).
SHIPPER_ENV = "ML_SANDBOX_INFERENCE_LOG_SHIPPER"
SHIPPERS = ("server", "supervisor")
SERVER_APPLICATION = "inference-log"  # application_name of the connections (pg_stat_activity tells them apart)
SUPERVISOR_APPLICATION = "inference-log-shipper"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LEGACY_CHUNK = 1000


def ensure_schema(conn) -> None:
    conn.execute(SCHEMA)


@dataclass(frozen=True)
class LoggedModel:
    """What a model server's rows are tagged with."""

    deployment: str
    model_name: str
    model_version: str


class LoggedRequest(NamedTuple):
    """One answered request for the log: its input rows (a matrix of numbers) and its predictions, one a row."""

    features: Any
    predictions: Any
    request_id: str | None
    variant: str | None


class _EventIds:
    """Base event ids, one per journal record: a random 64-bit prefix drawn once per writer, then a counter, with the
    low 32 bits left zero for the row index. Unique without a system call per request: `uuid.uuid4` reads the
    kernel's random source every time, and under load that was half the cost of logging a record."""

    def __init__(self) -> None:
        self._prefix = int.from_bytes(os.urandom(8), "big") << 64
        self._counter = itertools.count(1)  # next() on it is atomic under the GIL: request threads share it

    def next_base(self) -> str:
        return f"{self._prefix | (next(self._counter) << 32):032x}"


def shipper_from_env(environ) -> str:
    """`SHIPPER_ENV` of a model server's environment: who ships its journal ("server" when unset)."""
    value = environ.get(SHIPPER_ENV, "server") or "server"
    if value not in SHIPPERS:
        raise ValueError(f"{SHIPPER_ENV}={value!r}: expected one of {', '.join(SHIPPERS)}")
    return value


class PostgresSink:
    """Where shippers hand their batches: the inference_log table, one connection, reconnecting after a failure.

    Idempotent as `shipping.Shipper` needs: rows keyed by the event id fixed in the journal, ``COPY`` into a
    staging table, then ``INSERT ... ON CONFLICT (event_id) DO NOTHING``, committed once per batch."""

    def __init__(self, dsn: str, *, application_name: str, on_connect: Callable[[int], None] | None = None):
        self.dsn = dsn
        self.application_name = application_name
        self.on_connect = on_connect  # called with the server process's pid of each new connection
        self._conn = None

    def __call__(self, entries: list[Entry]) -> int:
        rows = self.rows(entries)
        self.write(rows)
        return len(rows)

    @staticmethod
    def rows(entries: list[Entry]) -> list[tuple]:
        """Journal records as table rows, each with its event id (fixed in the journal, so shipping is idempotent)."""
        rows = []
        for header, record in entries:
            ts_us, base_id, model, requests, features, predictions = _as_batch(header, record)
            ts, base = _EPOCH + timedelta(microseconds=ts_us), uuid.UUID(base_id).int
            tags = [(request_id, variant) for count, request_id, variant in requests for _ in range(count)]
            stacked = zip(tags, features, predictions, strict=False)
            for index, ((request_id, variant), row, prediction) in enumerate(stacked):
                rows.append(
                    (str(uuid.UUID(int=base ^ index)), ts, *model, variant, request_id, row, _jsonb(prediction))
                )
        return rows

    def write(self, rows: Sequence[tuple]) -> None:
        conn = self._connect()
        with conn.cursor() as cur:
            with cur.copy(f"COPY staging ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(f"INSERT INTO {TABLE} SELECT * FROM staging ON CONFLICT (event_id) DO NOTHING")
        conn.commit()

    def _connect(self):
        if self._conn is None or self._conn.closed:
            import psycopg

            self._conn = psycopg.connect(self.dsn, connect_timeout=3, application_name=self.application_name)
            self._conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS staging (LIKE {TABLE} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            self._conn.commit()
            if self.on_connect is not None:
                self.on_connect(self._conn.info.backend_pid)
        return self._conn

    def disconnect(self) -> None:
        """After a failure (the next batch reconnects), and at the end."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def journal_folders(deployments: Path) -> list[Path]:
    """The inference journals under a local sandbox's ``deployments/`` folder: one per model server that ever ran
    there, recorded or undeployed (`serve undeploy` keeps the folder, and its rows are still shipped)."""
    return sorted(path for path in Path(deployments).glob(f"*/{JOURNAL_DIR}") if path.is_dir())


# The supervisor's shipping thread, and its PostgreSQL backend where the caller can renice it, run at this lower
# priority: at a model's capacity edge the cores go to the servers first, and shipping catches up in the gaps
# (what waits is on disk, acknowledged). Idle, it changes nothing: nothing else wants the cores.
SHIPPING_NICE = 10


def ship_journals(
    folders,
    dsn: str,
    *,
    interval: float = 0.5,
    batch_rows: int = 2000,
    on_error=None,
    on_shipped=None,
    on_connect: Callable[[int], None] | None = None,
) -> ShipperGroup:
    """The supervisor's shipper: every journal ``folders()`` lists, through one connection, from one thread
    (call ``.start()``), at `SHIPPING_NICE`. A journal whose server ships it itself (`SHIPPER_ENV` server) is left
    to that server. ``on_connect(pid)``: each new connection's server process (the caller may renice it)."""
    sink = PostgresSink(dsn, application_name=SUPERVISOR_APPLICATION, on_connect=on_connect)

    def failed(exc: BaseException) -> None:
        sink.disconnect()
        if on_error is not None:
            on_error(exc)

    group = ShipperGroup(
        folders,
        sink,
        max_rows=batch_rows,
        interval=interval,
        on_error=failed,
        on_shipped=on_shipped,
        nice=SHIPPING_NICE,
    )
    group.sink = sink
    return group


class InferenceLogWriter:
    """Rows on local disk before `log` returns; shipped to PostgreSQL, each row exactly once, by a thread of this
    process (``ship=True``) or by another process (the supervisor: ``ship=False``, see `SHIPPER_ENV`).

    A journal record is one write: a micro-batch of requests, ``{"ts", "id", "requests": [[rows, request_id,
    variant], ...], "features": {"f8": BASE64, "columns": N}, "predictions": [...]}``, the requests' rows stacked
    in order (features as little-endian float64 bytes, or as JSON lists when the rows' widths differ); row
    ``i``'s event id is ``id XOR i`` (a base id per record, unique: see `_EventIds`; its low 32 bits count rows).
    One encoding a batch, and no decimal text for the features: that was most of what logging cost the server.
    Journals of older servers hold one request a record, ``[ts_us, request_id, variant, base_id, features,
    predictions]``, and are shipped as they are; a record copied from an old spool is one such row with its own
    event id and its model as a 7th element. The segment's header is the model that answered (a redeploy of
    another version under the same name starts a new segment).
    """

    def __init__(
        self,
        dsn: str,
        model: LoggedModel,
        *,
        spool_dir: Path,
        batch_rows: int = 2000,
        flush_interval: float = 0.5,
        segment_bytes: int = 16 << 20,
        metrics_registry=None,
        ship: bool = True,
    ):
        self.dsn = dsn
        self.model = model
        self.spool_dir = Path(spool_dir)
        self.spool_file = self.spool_dir / SPOOL_NAME
        self.batch_rows = batch_rows
        self.flush_interval = flush_interval
        self.ships = ship
        self._event_ids = _EventIds()
        self._metrics = _Metrics(metrics_registry, shipping=ship)
        self.journal = Journal(
            self.spool_dir / JOURNAL_DIR,
            {"deployment": model.deployment, "model_name": model.model_name, "model_version": model.model_version},
            segment_bytes=segment_bytes,
        )
        self._metrics.pending.set_function(lambda: self.journal.pending_rows)
        self._import_spool()
        self._unannounced = 0  # rows appended since the shipper was last woken
        self.sink = PostgresSink(dsn, application_name=SERVER_APPLICATION)
        self.reader = JournalReader(self.journal.folder)
        self._shipper = (
            Shipper(
                self.reader,
                self._ship,
                max_rows=batch_rows,
                interval=flush_interval,
                on_error=self._shipping_failed,
                on_shipped=self._shipped,
            )
            if ship
            else None
        )

    # ---------------------------------------------------------------- request path

    def log(self, features: np.ndarray, predictions: np.ndarray, *, request_id: str | None, variant: str | None):
        """Append one request's rows to the journal (one write); on return they survive a kill of this process.

        Raises (OSError) when the journal cannot be written, a full disk say: the caller then fails the
        request rather than answer a prediction that is not logged."""
        self.log_requests([LoggedRequest(features, predictions, request_id, variant)])

    def log_requests(self, requests: Sequence[LoggedRequest]) -> None:
        """`log` for several requests (a micro-batch) in one write, one record: all or none on disk.

        The model server calls it from its predict thread, once per batch, before any of them is answered. A
        line per request, encoded and written on the event loop's thread, cost about a tenth of the server's
        throughput at its limit (both threads share the GIL, so all of it is the server's time)."""
        import numpy as np  # here, not at the top: the supervisor ships journals with this module and no numpy

        matrices, predictions, tags = [], [], []
        for request in requests:
            matrix = np.asarray(request.features, dtype=float)
            values = np.asarray(request.predictions).tolist()
            count = min(len(matrix), len(values))
            matrices.append(matrix[:count])
            predictions += values[:count]
            tags.append([count, request.request_id, request.variant])
        total = len(predictions)
        if not total:
            return
        record = {"ts": time.time_ns() // 1000, "id": self._event_ids.next_base(), "requests": tags}
        record.update(features=_encode_features(np, matrices), predictions=predictions)
        self.journal.append(encode_record(total, record), total)
        self._metrics.spooled.inc(total)
        if self._shipper is not None:
            self._unannounced += total  # racy under threads: it only decides when to wake, never what ships
            if self._unannounced >= self.batch_rows:
                self._unannounced = 0
                self._shipper.wake()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> InferenceLogWriter:
        if self._shipper is not None:
            self._shipper.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Ship what the database takes within ``timeout`` (shipping here); the rest stays in the journal, for
        the next start or for the supervisor."""
        if self._shipper is not None and self._shipper.stop(timeout):
            self._shipper.close()
            self.sink.disconnect()
        # else the shipper is still inside a write: its lock goes when the process exits
        left = self.journal.pending_rows
        self.journal.close()
        if left and self.ships:
            logger.warning("inference log: %d row(s) left in %s for the next start", left, self.journal.folder)
        elif left:  # the usual case: the supervisor ships them within a second
            logger.info("inference log: %d row(s) in %s for the supervisor to ship", left, self.journal.folder)

    @property
    def pending_rows(self) -> int:
        """Rows on disk not yet shipped to the database (by whichever process ships)."""
        return self.journal.pending_rows

    # ---------------------------------------------------------------- the shipper thread (ship=True)

    def _ship(self, entries: list[Entry]) -> None:
        rows = PostgresSink.rows(entries)
        self._write(rows)
        self._metrics.rows_written.inc(len(rows))

    def _write(self, rows: Sequence[tuple]) -> None:
        self.sink.write(rows)

    def _shipped(self, batch: Batch) -> None:
        if batch.skipped_lines:
            self._metrics.skipped.inc(batch.skipped_lines)

    def _shipping_failed(self, exc: BaseException) -> None:
        self._metrics.write_errors.inc()
        self.sink.disconnect()

    # ---------------------------------------------------------------- the spool of older servers

    def _import_spool(self) -> None:
        """Copy an old server's spool into the journal (its rows keep their event ids), then remove it.

        A kill half-way leaves the spool: it is copied again at the next start, and the table drops what it has."""
        for path in (self.spool_file.with_suffix(".replaying"), self.spool_file):
            if not path.exists():
                continue
            chunk, rows, copied = [], 0, 0
            with path.open("rb") as handle:
                for number, line in enumerate(handle, 1):
                    try:
                        item = json.loads(line)
                        ts = datetime.fromisoformat(item[1])
                        ts_us = (ts - _EPOCH) // timedelta(microseconds=1)
                        record = [ts_us, item[6], item[5], str(uuid.UUID(item[0])), [item[7]], [json.loads(item[8])]]
                        chunk.append(encode_record(1, [*record, list(item[2:5])]))
                    except (ValueError, IndexError, TypeError, AttributeError):  # a line cut short by a crash
                        logger.error("inference log: %s line %d is not a row; skipped", path, number)
                        continue
                    rows += 1
                    if rows == _LEGACY_CHUNK:
                        self.journal.append(b"".join(chunk), rows)
                        copied += rows
                        chunk, rows = [], 0
            if chunk:
                self.journal.append(b"".join(chunk), rows)
                copied += rows
            path.unlink()
            logger.info("inference log: %d row(s) of the old spool %s moved to the journal", copied, path.name)


def _as_batch(header: dict, record: dict | list) -> tuple:
    """A journal record as (ts_us, base id, model, requests, features, predictions), whatever its shape: a batch
    (what servers write), or one request (journals of servers before batch records; rows copied from an old
    spool, whose model is their 7th element)."""
    model = (header["deployment"], header["model_name"], header["model_version"])
    if isinstance(record, dict):
        features = _decode_features(record["features"])
        return record["ts"], record["id"], model, record["requests"], features, record["predictions"]
    ts_us, request_id, variant, base_id, features, predictions = record[:6]
    requests = [[min(len(features), len(predictions)), request_id, variant]]
    return ts_us, base_id, (record[6] if len(record) > 6 else model), requests, features, predictions


def _encode_features(np, matrices: list) -> dict | list:
    """The batch's feature rows for a journal record: as little-endian float64 bytes in base64 when every row has
    the same width (writing each number's decimal text was most of the record's cost), else as JSON lists."""
    try:
        stacked = np.concatenate([matrix.reshape(len(matrix), -1) for matrix in matrices])
    except ValueError:  # rows of different widths
        stacked = None
    if stacked is None or stacked.shape[1] == 0:
        return [row for matrix in matrices for row in matrix.tolist()]
    data = base64.b64encode(np.ascontiguousarray(stacked, dtype="<f8").tobytes()).decode("ascii")
    return {"f8": data, "columns": stacked.shape[1]}


def _decode_features(features: dict | list) -> list:
    """`_encode_features` undone, without numpy (the supervisor ships with the standard library only)."""
    if isinstance(features, list):
        return features
    values = array.array("d", base64.b64decode(features["f8"]))
    if sys.byteorder == "big":
        values.byteswap()
    columns = features["columns"]
    return [values[start : start + columns].tolist() for start in range(0, len(values), columns)]


def _jsonb(value) -> str:
    """A prediction as jsonb text; NaN and infinities (JSON has none, jsonb refuses them) become null."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value))


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value


class _Metrics:
    """Writer health on the model server's /metrics."""

    def __init__(self, registry, *, shipping: bool = True):
        from prometheus_client import REGISTRY, Counter, Gauge

        registry = registry or REGISTRY
        self.spooled = Counter(
            "inference_log_rows_spooled", "Rows appended to the on-disk journal (all logged rows)", registry=registry
        )
        self.pending = Gauge(
            "inference_log_pending_rows", "Rows in the on-disk journal not yet in the table", registry=registry
        )
        if not shipping:
            return  # the supervisor ships: what shipping counts is in its log, not on this server's /metrics
        self.rows_written = Counter(
            "inference_log_rows_written", "Inference rows committed to the log table", registry=registry
        )
        self.write_errors = Counter("inference_log_write_errors", "Failed batch writes (retried)", registry=registry)
        self.skipped = Counter(
            "inference_log_journal_lines_skipped",
            "Journal lines not shipped: cut short by a kill mid-write (never acknowledged) or corrupt",
            registry=registry,
        )


# -------------------------------------------------------------------- reading


class InferenceLogStore:
    """Queries over the log: counts, and the features and predictions of a window."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    def _connect(self):
        import psycopg

        return psycopg.connect(self.dsn, connect_timeout=5)

    def count(
        self, *, model_name: str | None = None, deployment: str | None = None, since: datetime | None = None
    ) -> int:
        clauses, params = _where(model_name=model_name, deployment=deployment, since=since)
        with self._connect() as conn:
            return conn.execute(f"SELECT count(*) FROM {TABLE}{clauses}", params).fetchone()[0]

    def latest_version(self, model_name: str) -> str | None:
        """The version that answered most recently: what is served now."""
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT model_version FROM {TABLE} WHERE model_name = %s ORDER BY ts DESC LIMIT 1", (model_name,)
            ).fetchone()
        return row[0] if row else None

    def window(
        self,
        model_name: str,
        model_version: str,
        *,
        since: datetime | None = None,
        limit: int = 20_000,
        variant: str | None = None,
    ) -> tuple[np.ndarray, list]:
        """The most recent rows (at most ``limit``): features as a matrix, and the predictions."""
        import numpy as np

        clauses, params = _where(model_name=model_name, model_version=model_version, since=since, variant=variant)
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT features, prediction FROM {TABLE}{clauses} ORDER BY ts DESC LIMIT %s", [*params, limit]
            ).fetchall()
        if not rows:
            return np.empty((0, 0)), []
        return np.asarray([r[0] for r in rows], dtype=float), [r[1] for r in rows]


def _where(**filters) -> tuple[str, list]:
    clauses, params = [], []
    for column, value in filters.items():
        if value is None:
            continue
        clauses.append("ts >= %s" if column == "since" else f"{column} = %s")
        params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def wait_for_rows(store: InferenceLogStore, expected: int, *, timeout: float = 30.0, **filters) -> int:
    """Poll until the log holds ``expected`` rows (writes are asynchronous); returns the last count."""
    deadline = time.monotonic() + timeout
    count = store.count(**filters)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.25)
        count = store.count(**filters)
    return count
