"""The model server's inference log: a micro-batch's rows go to the journal in one write, from the predict thread,
before any request of the batch is answered; a journal that cannot be written fails the batch's requests."""

from __future__ import annotations

import asyncio
import errno
import json

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from sandbox.serving import journal as journal_module
from sandbox.serving.inference_log import COLUMNS, JOURNAL_DIR, InferenceLogWriter, LoggedModel, PostgresSink
from sandbox.serving.journal import JournalReader
from sandbox.serving.mlflow_model import ModelFailure, _Request
from sandbox.serving.shipping import Shipper
from tests.unit.serving.conftest import Served, serve, stop

NO_DATABASE = "postgresql://u:p@127.0.0.1:9/monitoring"  # never reached: the supervisor ships (ship=False)


@pytest.fixture
def logged(matrix, runner, tmp_path):
    """The numpy forest served with an inference log of its own (journal under tmp_path, nothing shipped)."""
    one = serve(matrix["forest_numpy"], runner, name="logged-forest")
    writer = InferenceLogWriter(
        NO_DATABASE,
        LoggedModel("logged-forest", "forest", "1"),
        spool_dir=tmp_path,
        metrics_registry=CollectorRegistry(),
        ship=False,
    )
    one.server.inference_log = writer.start()
    try:
        yield one
    finally:
        writer.close()
        stop(one)


def _journal(served: Served) -> list[dict]:
    """The rows the served model's journal holds, in order, as the shipper would write them to the table."""
    entries: list = []
    shipper = Shipper(JournalReader(served.server.inference_log.spool_dir / JOURNAL_DIR), entries.extend)
    shipper.drain()
    shipper.close()
    return [dict(zip(COLUMNS, row, strict=True)) for row in PostgresSink.rows(entries)]


def _records(served: Served) -> int:
    """How many records (lines after the header) the journal holds."""
    folder = served.server.inference_log.spool_dir / JOURNAL_DIR
    return sum(len(path.read_bytes().splitlines()) - 1 for path in folder.glob("*.journal"))


@pytest.fixture
def writes(monkeypatch) -> list[bytes]:
    """The journal's write(2) calls, counted (and made)."""
    calls: list[bytes] = []
    real_write = journal_module.os.write

    def counting_write(fd, data):
        calls.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(journal_module.os, "write", counting_write)
    return calls


def test_a_batch_of_requests_is_logged_in_one_write_each_request_with_its_own_id_and_variant(logged, writes):
    rows = np.asarray(logged.model.v1_body["instances"])
    requests = [
        _Request(logged.server.io.from_v1({"instances": rows[i : i + 1 + i % 2].tolist()}), f"req-{i}", f"v{i % 2}")
        for i in range(3)
    ]
    results = logged.server._run_batch(requests)

    assert not any(isinstance(result, BaseException) for result in results)
    assert len(writes) == 1 and _records(logged) == 1, "one write, one record, for the whole batch"
    logged_rows = _journal(logged)
    expected = []  # request i sent rows[i : i + 1 + i % 2]: one row, then two, then one
    for i in range(3):
        predictions = results[i][0].array.tolist()
        for n, row in enumerate(rows[i : i + 1 + i % 2].tolist()):
            expected.append((f"req-{i}", f"v{i % 2}", row, json.dumps(predictions[n])))
    assert [(r["request_id"], r["variant"], r["features"], r["prediction"]) for r in logged_rows] == expected
    assert len({r["event_id"] for r in logged_rows}) == 4  # an event id per row


def test_every_answered_request_is_in_the_journal_when_its_answer_arrives(logged):
    body = logged.model.v1_body

    async def concurrent_requests():
        return await asyncio.gather(
            *(
                logged.client.post(logged.v1_predict, json=body, headers={"x-request-id": f"concurrent-{n}"})
                for n in range(6)
            )
        )

    responses = logged.run(concurrent_requests())
    assert [r.status_code for r in responses] == [200] * 6
    records = _journal(logged)
    rows_sent = len(body["instances"])
    assert sorted(r["request_id"] for r in records) == sorted([f"concurrent-{n}" for n in range(6)] * rows_sent)
    assert [json.loads(r["prediction"]) for r in records[:rows_sent]] == responses[0].json()["predictions"]


def test_a_journal_that_cannot_be_written_fails_the_batch_and_answers_nothing_unlogged(logged, monkeypatch):
    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", disk_full)
    rows = logged.model.v1_body["instances"]
    good = _Request(logged.server.io.from_v1({"instances": rows}), "good", None)
    results = logged.server._run_batch([good, good])
    assert all(isinstance(result, OSError) for result in results)

    response = logged.post(logged.v1_predict, json=logged.model.v1_body)
    assert response.status_code == 500 and "No space left" in response.text
    monkeypatch.undo()
    assert _journal(logged) == []  # nothing half-written
    logged.assert_healthy()
    assert len(_journal(logged)) == len(rows)


def test_a_request_the_model_fails_keeps_its_own_error_and_the_others_are_logged(logged, monkeypatch):
    server = logged.server
    rows = logged.model.v1_body["instances"]
    requests = [_Request(server.io.from_v1({"instances": rows}), f"r{n}", None) for n in range(3)]
    real_predict = server._predict

    def fail_the_second(items):  # the model fails on the second request only (and so on the stacked batch)
        failure = ModelFailure(ValueError("bad row"))
        results = [real_predict(item) if n != 1 else failure for n, item in enumerate(items)]
        return results, None  # answered one by one: nothing stacked

    monkeypatch.setattr(server, "_predict_batch", fail_the_second)
    results = server._run_batch(requests)
    assert isinstance(results[1], ModelFailure)
    logged_ids = [r["request_id"] for r in _journal(logged)]
    rows_sent = len(rows)
    assert logged_ids == ["r0"] * rows_sent + ["r2"] * rows_sent
