"""The guard in front of MLflow's app (sandbox/tracking_server.py): what it refuses and the answers it rewrites.

The requests themselves, against a real MLflow, are tests/integration/test_mlflow_front_door.py's; here the rules,
with the answers MLflow 3.17 gives (captured from a sandbox) as their input.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.tracking_server import bad_artifact_path, rewritten_error

# What MLflow 3.17 answers a download through its artifact proxy of a file that is not there.
MISSING = json.dumps(
    {
        "error_code": "INTERNAL_ERROR",
        "message": "The following failures occurred while downloading one or more artifacts from "
        "s3://mlflow-artifacts:\n##### File nothing/here #####\nAn error occurred (404) when calling the HeadObject "
        "operation: Not Found",
    }
).encode()
# ... and an experiment name longer than its column.
TOO_LONG = json.dumps(
    {
        "error_code": "BAD_REQUEST",
        "message": "(psycopg.errors.StringDataRightTruncation) value too long for type character varying(256)\n"
        "[SQL: INSERT INTO experiments (name, workspace) VALUES (%(name)s::VARCHAR, %(workspace)s::VARCHAR)]\n"
        "[parameters: {'name': 'xxxx', 'workspace': 'default'}]\n(Background on this error at: https://sqlalche.me/e/20/9h9h)",
    }
).encode()


@pytest.mark.parametrize(
    "path",
    [
        "..%5c..%5cetc%5cpasswd",
        "..\\..\\etc\\passwd",
        "....//....//etc/passwd",
        "1/../../etc/passwd",
        "a/./b",
        "1/x%5Cy",
    ],
)
def test_the_issues_paths_are_refused_naming_why(path):
    problem = bad_artifact_path(path)
    assert problem and ("backslash" in problem or "segment" in problem), problem


@pytest.mark.parametrize("path", ["1/abc/artifacts/model/MLmodel", "notes/secret.txt", "a/b.c/d..e", "dir/"])
def test_artifact_paths_pass(path):
    assert bad_artifact_path(path) is None


@given(
    st.lists(st.text(st.characters(blacklist_characters="/\\", blacklist_categories=["Cs"]), min_size=1), min_size=1)
)
def test_a_path_of_plain_segments_passes_and_a_backslash_anywhere_is_refused(segments):
    segments = [s for s in segments if s not in (".", "..") and "%" not in s] or ["x"]
    assert bad_artifact_path("/".join(segments)) is None
    assert "backslash" in bad_artifact_path("/".join(segments) + "\\x")


def test_a_missing_artifact_is_404_naming_it():
    assert rewritten_error(500, MISSING, proxy_download=True) == (
        404,
        {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no artifact at nothing/here"},
    )
    assert rewritten_error(500, MISSING, proxy_download=False) is None  # elsewhere, MLflow's answer stands


def test_a_database_refusal_keeps_its_reason_and_drops_the_sql_and_parameters():
    status, body = rewritten_error(400, TOO_LONG, proxy_download=False)
    assert status == 400 and body["error_code"] == "BAD_REQUEST"
    assert body["message"] == "the database refused a value: value too long for type character varying(256)"


@pytest.mark.parametrize(
    "status, body",
    [(404, b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run not found"}'), (500, b"not json"), (401, b"")],
)
def test_other_errors_are_mlflows(status, body):
    assert rewritten_error(status, body, proxy_download=True) is None
