"""The pipelines' warm interpreter: a step is a fork of it, with the step's own stdio, environment, folder and
arguments; anything it cannot serve runs as a plain Python; it ends with the process that started it."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sandbox.pipelines import warm
from sandbox.pipelines.warm import WarmSteps

STEP = """
import os, sys
print("args", sys.argv[1:], "var", os.environ.get("STEP_VAR"), "cwd", os.getcwd(), "ppid", os.getppid())
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("STEP_CODE", "0")))
"""


@pytest.fixture
def modules(tmp_path):
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / "warm_test_step.py").write_text(STEP)
    return folder


@pytest.fixture
def warm_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(warm, "PRELOAD", ("json",))  # the test's own module list: quick to start
    started = WarmSteps.start(tmp_path / "warm")
    assert started is not None
    yield started
    started.stop()


def _run(python: Path, *args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True)


def test_a_step_runs_as_a_fork_with_its_own_arguments_environment_folder_and_output(warm_steps, modules, tmp_path):
    env = {"STEP_VAR": "from-the-step", "STEP_CODE": "3", "PYTHONPATH": str(modules)}
    done = _run(warm_steps.step_python(tmp_path), "-m", "warm_test_step", "--a", "b", env=env, cwd=tmp_path)
    assert done.returncode == 3
    assert f"args ['--a', 'b'] var from-the-step cwd {tmp_path} ppid {warm_steps.process.pid}" in done.stdout
    assert done.stderr == "to stderr\n"
    assert "ran warm_test_step as pid" in (warm_steps.folder / "warm.log").read_text()


def test_what_it_cannot_serve_runs_as_a_plain_python(warm_steps, modules, tmp_path):
    python = warm_steps.step_python(tmp_path)
    done = _run(python, "-c", "import os; print(os.getppid())", env={}, cwd=tmp_path)
    assert done.returncode == 0 and int(done.stdout) != warm_steps.process.pid
    warm_steps.stop()
    assert not warm_steps.alive() and not warm_steps.socket.exists()
    again = _run(python, "-m", "warm_test_step", env={"STEP_VAR": "plain", "PYTHONPATH": str(modules)}, cwd=tmp_path)
    assert again.returncode == 0 and "var plain" in again.stdout  # no interpreter: the step ran all the same


def test_it_ends_with_the_process_that_started_it_and_leaves_nothing(tmp_path):
    starter = textwrap.dedent(
        f"""
        from pathlib import Path
        from sandbox.pipelines import warm
        warm.PRELOAD = ("json",)
        started = warm.WarmSteps.start(Path({str(tmp_path / "warm")!r}))
        print(started.process.pid, flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, check=True)
    pid = int(done.stdout)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
    assert not (tmp_path / "warm").exists()  # socket, script and an empty log removed, then the folder


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_folder_too_deep_for_a_socket_means_no_warm_interpreter(tmp_path):
    deep = tmp_path / ("x" * 120)
    assert WarmSteps.start(deep) is None and not deep.exists()
