"""`sandbox loadtest`'s new options refuse bad input before anything runs: one line, the fix, exit 2."""

import pytest
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.errors import ExitCode

URL = "http://127.0.0.1:9/v1/models/x:predict"  # never contacted: every case fails before the run


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--rate", "0"], "the rate must be positive"),
        (["--rate", "10", "--shape", "ramp:to=5,over=5s"], "--rate and --shape both set the load"),
        (["--rate-profile", "0s:5,abc"], "cannot read profile point 'abc'"),
        (["--rate-profile", "5s:5,10s:5"], "first point must be at 0s"),
        (["--rate-profile", "0s:5,10s:5", "--duration", "5s"], "--duration and a profile or shape both set"),
        (["--shape", "wave:to=3"], "unknown load shape 'wave'"),
        (["--shape", "spike:base=1,peak=5"], "at, for missing"),
        (["--open", "--rate", "5"], "--open goes with --shape"),
        (["--find-capacity"], "needs an SLO"),
        (["--find-capacity", "--slo", "p99<1s,rps>5"], "rps term"),
        (["--find-capacity", "--slo", "p99<1s", "--rate", "5"], "--find-capacity sets the rate itself"),
        (["--find-capacity", "--slo", "p99<1s", "--start-rate", "50", "--max-rate", "5"], "out of order"),
        (["--slo", "p99<<1s"], "cannot read SLO term"),
        (["--compare", URL, "--rounds", "1"], "at least 2 rounds"),
        (["--rate", "5", "--master"], "does not distribute"),
        (["--master", "--expect-workers", "0"], "--expect-workers must be at least 1"),
        (["--rate", "5", "--max-late", "120"], "--max-late"),
        (["--rate", "5", "--timeout", "soon"], "bad duration"),
    ],
)
def test_bad_loadtest_options_are_refused_with_the_fix(tmp_path, args, words):
    result = CliRunner().invoke(app, ["loadtest", URL, *args, "--report", str(tmp_path / "r"), "--data", "x.csv"])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert words in result.output
    assert "Fix:" in result.output
    assert not (tmp_path / "r").exists()


def test_a_worker_needs_a_real_port():
    result = CliRunner().invoke(app, ["loadtest-worker", "--master-host", "127.0.0.1", "--master-port", "70000"])
    assert result.exit_code == ExitCode.USAGE and "is not a port" in result.output
