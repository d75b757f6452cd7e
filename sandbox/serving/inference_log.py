"""Inference logging: every prediction a model server makes, in a PostgreSQL table.

Writers (the model servers) never wait on the database. `InferenceLogWriter.log`
appends to an in-memory queue and returns; a background thread drains it in
batches with `COPY` into a staging table and an `INSERT ... ON CONFLICT DO
NOTHING`, so a batch retried after a lost acknowledgement is written once.

Nothing logged is dropped: while the database is away (a restart), rows wait
in memory and the thread retries with backoff; rows over the in-memory bound,
and whatever is still unwritten when the server stops, go to a spool file in
the server's folder, replayed into the table on its next start. A row is in the
table, in memory or in the spool, never nowhere (tests/integration/
test_monitoring.py restarts each service and counts).

It lives with serving, which writes it; monitoring (`InferenceLogStore` in drift
checks and traffic replay) reads it, and the profiles create its table.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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
SPOOL_NAME = "inference-spool.jsonl"


def ensure_schema(conn) -> None:
    conn.execute(SCHEMA)


@dataclass(frozen=True)
class LoggedModel:
    """What a model server's rows are tagged with."""

    deployment: str
    model_name: str
    model_version: str


class InferenceLogWriter:
    """Asynchronous, batched, at-least-once writes that land exactly once (keyed by event id)."""

    def __init__(
        self,
        dsn: str,
        model: LoggedModel,
        *,
        spool_dir: Path,
        batch_rows: int = 2000,
        flush_interval: float = 0.5,
        max_pending_rows: int = 200_000,
        metrics_registry=None,
    ):
        self.dsn = dsn
        self.model = model
        self.spool_file = spool_dir / SPOOL_NAME
        self.batch_rows = batch_rows
        self.flush_interval = flush_interval
        self.max_pending_rows = max_pending_rows
        # Requests are queued as they came (arrays, not rows): the request path does no conversion.
        self._queue: deque[tuple] = deque()
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._conn = None
        self._metrics = _Metrics(metrics_registry)
        self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)

    # ---------------------------------------------------------------- request path

    def log(self, features: np.ndarray, predictions: np.ndarray, *, request_id: str | None, variant: str | None):
        """Queue one request's rows; returns at once."""
        with self._lock:
            self._queue.append((datetime.now(UTC), request_id, variant, features, predictions))
            self._queued_rows += len(features)
            if self._queued_rows >= self.batch_rows:
                self._wake.set()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> InferenceLogWriter:
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued; spool whatever the database does not take in time."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        leftover = self._take_all()
        if leftover:
            self._spool(leftover)
        if self._conn is not None:
            self._conn.close()

    @property
    def pending_rows(self) -> int:
        return self._queued_rows

    # ---------------------------------------------------------------- writer thread

    def _run(self) -> None:
        backoff = 0.5
        self._replay_spool()
        pending: list[tuple] = []  # rows taken from the queue, not yet committed
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            pending.extend(self._take_all())
            if len(pending) > self.max_pending_rows:  # the database has been away long: keep the rest on disk
                self._spool(pending[: len(pending) - self.max_pending_rows])
                pending = pending[len(pending) - self.max_pending_rows :]
            while pending:
                batch = pending[: self.batch_rows]
                try:
                    self._write(batch)
                except Exception as exc:  # noqa: BLE001 - any database failure is retried, never raised into serving
                    self._metrics.write_errors.inc()
                    logger.warning("inference log: write failed (%s); %d row(s) kept for retry", exc, len(pending))
                    self._disconnect()
                    if self._stopping.is_set():
                        self._spool(pending)
                        return
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    break
                del pending[: len(batch)]
                backoff = 0.5
                if not pending and self._has_spool():
                    self._replay_spool(retry=False)  # rows spooled during a long outage: the database is back
            self._metrics.pending.set(len(pending) + self._queued_rows)
            if self._stopping.is_set() and not pending and not self._queued_rows:
                return

    def _take_all(self) -> list[tuple]:
        """Queued requests as table rows, each with its event id (fixed before the first attempt)."""
        with self._lock:
            requests, self._queue = self._queue, deque()
            self._queued_rows = 0
        rows = []
        model = self.model
        for ts, request_id, variant, features, predictions in requests:
            values = np.asarray(predictions).tolist()
            for row, prediction in zip(np.asarray(features, dtype=float).tolist(), values, strict=False):
                rows.append(
                    (
                        str(uuid.uuid4()),
                        ts,
                        model.deployment,
                        model.model_name,
                        model.model_version,
                        variant,
                        request_id,
                        row,
                        json.dumps(prediction),
                    )
                )
        return rows

    def _connect(self):
        if self._conn is None or self._conn.closed:
            import psycopg

            self._conn = psycopg.connect(self.dsn, connect_timeout=3, application_name="inference-log")
            self._conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS staging (LIKE {TABLE} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            self._conn.commit()
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _write(self, rows: Sequence[tuple]) -> None:
        conn = self._connect()
        with conn.cursor() as cur:
            with cur.copy(f"COPY staging ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(f"INSERT INTO {TABLE} SELECT * FROM staging ON CONFLICT (event_id) DO NOTHING")
        conn.commit()
        self._metrics.rows_written.inc(len(rows))

    # ---------------------------------------------------------------- spool

    def _spool(self, rows: Iterable[tuple]) -> None:
        rows = list(rows)
        self.spool_file.parent.mkdir(parents=True, exist_ok=True)
        with self.spool_file.open("a") as handle:
            for row in rows:
                handle.write(json.dumps([row[0], row[1].isoformat(), *row[2:]]) + "\n")
            handle.flush()
        self._metrics.spooled.inc(len(rows))
        logger.warning("inference log: %d row(s) spooled to %s for the next start", len(rows), self.spool_file)

    def _has_spool(self) -> bool:
        return self.spool_file.exists() or self.spool_file.with_suffix(".replaying").exists()

    def _replay_spool(self, *, retry: bool = True) -> None:
        # A spool is renamed before it is replayed, so rows spooled meanwhile go to a fresh
        # file; a rename left by an interrupted replay is finished first. Two passes cover both.
        replaying = self.spool_file.with_suffix(".replaying")
        for _ in range(2):
            if not replaying.exists():
                if not self.spool_file.exists():
                    return
                self.spool_file.replace(replaying)
            rows = []
            for number, line in enumerate(replaying.read_text().splitlines(), 1):
                try:
                    item = json.loads(line)
                    rows.append((item[0], datetime.fromisoformat(item[1]), *item[2:]))
                except (ValueError, IndexError, TypeError):  # a line cut short by a crash mid-write
                    logger.error("inference log: %s line %d is not a row; skipped", replaying, number)
            while True:
                try:
                    for start in range(0, len(rows), self.batch_rows):
                        self._write(rows[start : start + self.batch_rows])
                except Exception as exc:  # noqa: BLE001 - keep the spool; try again shortly
                    logger.warning("inference log: spool replay failed (%s); kept for a retry", exc)
                    self._disconnect()
                    if not retry or self._stopping.wait(2.0):
                        return  # left on disk: replayed after the next good write, or at the next start
                    continue
                replaying.unlink()
                logger.info("inference log: replayed %d spooled row(s)", len(rows))
                break


class _Metrics:
    """Writer health on the model server's /metrics."""

    def __init__(self, registry):
        from prometheus_client import REGISTRY, Counter, Gauge

        registry = registry or REGISTRY
        self.rows_written = Counter(
            "inference_log_rows_written", "Inference rows committed to the log table", registry=registry
        )
        self.write_errors = Counter("inference_log_write_errors", "Failed batch writes (retried)", registry=registry)
        self.spooled = Counter(
            "inference_log_rows_spooled", "Rows spooled to disk for a later start", registry=registry
        )
        self.pending = Gauge("inference_log_pending_rows", "Rows waiting to be written", registry=registry)


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
