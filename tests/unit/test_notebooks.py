"""The pure parts of the notebooks: config, `up`'s flags, the server's command line, the kernel's
environment, the starter notebooks' copy, the secret, and the scenario's notebook handling."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from sandbox.cli.stack import up_overrides
from sandbox.config import load_config
from sandbox.errors import ConfigError
from sandbox.profiles.local.process import COMPONENT_MARKER, HOME_MARKER, PORTS_MARKER
from sandbox.profiles.local.services.jupyterlab import (
    KERNEL_COMPONENT,
    copy_starters,
    kernel_env,
    kernelspec,
    seed_lab_settings,
    server_argv,
    starter_notebooks_dir,
    tokened_url,
)
from sandbox.profiles.local.state import SandboxDir, load_or_create_secrets
from sandbox.scenarios.notebooks import (
    INJECTED_TAG,
    describe_failure,
    inject_parameters,
    run_notebook,
    write_kernelspec,
)
from sandbox.scenarios.reports import write_attachments, write_markdown
from sandbox.scenarios.results import Outcome, ScenarioResult
from tests.factories import make_endpoints
from tests.scenario_names import name_problems

STARTERS = sorted(starter_notebooks_dir().glob("*.ipynb"))


def test_notebooks_are_on_by_default_and_configurable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config().notebooks.enabled is True and load_config().notebooks.port == 0
    (tmp_path / "sandbox.yaml").write_text("notebooks:\n  enabled: false\n  port: 18888\n")
    config = load_config()
    assert config.notebooks.enabled is False and config.notebooks.port == 18888
    monkeypatch.setenv("SANDBOX_NOTEBOOKS__ENABLED", "true")
    assert load_config().notebooks.enabled is True  # the environment beats the file
    assert load_config(**up_overrides(None, None, None, False, None)).notebooks.enabled is False  # a flag beats both
    with pytest.raises(ConfigError, match=r"notebooks\.token"):
        load_config(**{"notebooks.token": "x"})  # the token is generated, never configured


def test_up_flags_map_to_config_keys_and_unset_flags_leave_the_config_alone():
    assert up_overrides(None, None, None, None, None) == {
        "postgres.port": None,
        "s3.port": None,
        "mlflow.port": None,
        "notebooks.enabled": None,
        "notebooks.port": None,
    }
    assert up_overrides(1, 2, 3, True, 4)["notebooks.port"] == 4


def test_the_server_listens_on_loopback_only_with_the_token_alone_and_no_terminals(tmp_path):
    argv = server_argv("/venv/bin/python", 18888, tmp_path)
    assert argv[:3] == ["/venv/bin/python", "-m", "jupyterlab"]
    for setting in (
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=18888",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={tmp_path}",
        "--ServerApp.allow_remote_access=False",
        "--ServerApp.allow_origin=",
        "--ServerApp.disable_check_xsrf=False",
        "--ServerApp.terminals_enabled=False",
        "--PasswordIdentityProvider.hashed_password=",
        "--KernelManager.ip=127.0.0.1",
    ):
        assert setting in argv
    assert not any("token" in part.lower() for part in argv)  # never on a command line: `ps` shows it


def test_kernels_see_what_sandbox_env_exports_and_are_marked_as_kernels():
    endpoints = make_endpoints(buckets=["mlflow-artifacts", "data"], sandbox_env={"SANDBOX_DIR": "/s"})
    env = kernel_env(endpoints)
    assert {key: env[key] for key in endpoints.env()} == endpoints.env()
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:1" and env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:2"
    assert env["ML_SANDBOX_DATA_BUCKET"] == "data" and env["ML_SANDBOX_BUCKETS"] == "mlflow-artifacts,data"
    assert env["SANDBOX_DIR"] == "/s"  # the platform's SDK finds this stack
    assert env[COMPONENT_MARKER] == KERNEL_COMPONENT and env[PORTS_MARKER] == "{}" and HOME_MARKER not in env
    spec = kernelspec("/venv/bin/python", env)
    assert spec["argv"][:3] == ["/venv/bin/python", "-m", "ipykernel_launcher"] and spec["env"] == env


def test_the_url_carries_the_token_as_jupyter_server_list_prints_it():
    assert tokened_url("http://127.0.0.1:18888", "abc") == "http://127.0.0.1:18888/?token=abc"


def test_starters_are_copied_once_and_a_users_copy_is_never_overwritten(tmp_path):
    workspace = tmp_path / "notebooks"
    workspace.mkdir()
    mine = workspace / STARTERS[0].name
    mine.write_text("my edits")
    assert copy_starters(starter_notebooks_dir(), workspace) == len(STARTERS) - 1
    assert mine.read_text() == "my edits"
    assert copy_starters(starter_notebooks_dir(), workspace) == 0
    assert all(stat.S_IMODE((workspace / p.name).stat().st_mode) == 0o600 for p in STARTERS[1:])


def test_lab_settings_turn_the_news_prompt_off_once_and_keep_a_users_choice(tmp_path):
    assert seed_lab_settings(tmp_path)
    path = tmp_path / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    assert json.loads(path.read_text()) == {"fetchNews": "false"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text('{"fetchNews": "true"}')
    assert not seed_lab_settings(tmp_path)
    assert json.loads(path.read_text()) == {"fetchNews": "true"}


def test_the_token_is_generated_per_sandbox_and_added_to_an_older_secrets_file(tmp_path):
    one, two = SandboxDir(tmp_path / "one"), SandboxDir(tmp_path / "two")
    first = load_or_create_secrets(one)
    assert len(first.jupyter_token) >= 40 and first.jupyter_token != load_or_create_secrets(two).jupyter_token
    assert load_or_create_secrets(one) == first  # kept
    older = json.loads(one.secrets_file.read_text())
    del older["jupyter_token"]
    one.secrets_file.write_text(json.dumps(older))
    upgraded = load_or_create_secrets(one)
    assert upgraded.jupyter_token and upgraded.s3_secret_key == first.s3_secret_key
    assert json.loads(one.secrets_file.read_text())["jupyter_token"] == upgraded.jupyter_token
    assert stat.S_IMODE(one.secrets_file.stat().st_mode) == 0o600


# --------------------------------------------------------------------------- the starter notebooks


def test_the_starter_notebooks_are_valid_have_a_parameters_cell_and_no_outputs():
    assert [p.name[:2] for p in STARTERS] == ["01", "02", "03"]
    for path in STARTERS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        assert book.metadata.kernelspec.name == "python3"  # the same name on a JupyterLab pod
        tagged = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "PREFIX =" in tagged[0].source
        assert all(not c.get("outputs") for c in book.cells if c.cell_type == "code")
        assert "assert " in book.cells[-1].source  # each ends with assertions on what it made


@pytest.mark.parametrize("path", STARTERS, ids=lambda p: p.stem)
def test_as_the_scenario_runs_them_every_name_the_notebooks_create_has_the_prefix(path):
    book = nbformat.read(path, as_version=4)
    inject_parameters(book, {"PREFIX": "checklist-notebooks"})
    source = "\n".join(c.source for c in book.cells if c.cell_type == "code")
    # The scenario's parameter, as scenario files spell a prefixed name; the rest is the notebook's own code.
    source = source.replace("PREFIX = 'checklist-notebooks'", 'PREFIX = scenario_name("notebooks")')
    source = source.replace('PREFIX = "starter"', "")
    assert name_problems(source, path.name) == []


@pytest.mark.parametrize("path", STARTERS, ids=lambda p: p.stem)
def test_the_notebooks_name_no_local_path(path):
    source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    for local_only in ("127.0.0.1", "localhost", ".sandbox", "/tmp/", "/home/", "/root/"):
        assert local_only not in source


@pytest.mark.parametrize("path", STARTERS, ids=lambda p: p.stem)
def test_the_notebooks_make_no_temporary_file_that_outlives_their_kernel(path):
    """mkdtemp/mkstemp/NamedTemporaryFile(delete=False) stay when a cell fails; a TemporaryDirectory goes."""
    source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    for leaky in ("mkdtemp(", "mkstemp(", "delete=False"):
        assert leaky not in source


def test_a_temporary_directory_goes_with_the_kernel_even_when_a_later_cell_fails(tmp_path):
    """What notebook 02 relies on: run as the scenario runs it, a failing cell, and its folder is still gone."""
    record = tmp_path / "folder.txt"
    book = new_notebook(
        cells=[
            new_code_cell("PREFIX = 'x'", metadata={"tags": ["parameters"]}),
            new_code_cell(
                "import tempfile\nfrom pathlib import Path\n"
                "work_dir = tempfile.TemporaryDirectory(prefix='notebook-')\nwork = Path(work_dir.name)\n"
                f"(work / 'train.csv').write_text('a')\nPath({str(record)!r}).write_text(str(work))"
            ),
            new_code_cell("raise RuntimeError('a cell that fails')"),
        ]
    )
    notebook = tmp_path / "leak.ipynb"
    nbformat.write(book, notebook)
    run = run_notebook(notebook, parameters={}, env=dict(os.environ), workdir=tmp_path, timeout_s=120)
    assert run.failure and "a cell that fails" in run.failure
    folder = Path(record.read_text())
    assert folder.name.startswith("notebook-")
    assert not folder.exists()


# --------------------------------------------------------------------------- running them


def test_parameters_are_injected_after_the_tagged_cell():
    book = new_notebook(cells=[new_code_cell("import os"), new_code_cell("PREFIX = 'x'"), new_code_cell("use()")])
    book.cells[1].metadata["tags"] = ["parameters"]
    assert inject_parameters(book, {"PREFIX": "checklist-a", "N": 3}) == 2
    assert book.cells[2].source.splitlines()[1:] == ["PREFIX = 'checklist-a'", "N = 3"]
    assert book.cells[2].metadata["tags"] == [INJECTED_TAG] and book.cells[3].source == "use()"
    untagged = new_notebook(cells=[new_code_cell("use()")])
    assert inject_parameters(untagged, {"A": 1}) == 0


def test_a_failure_names_the_notebook_the_cell_and_the_error():
    book = new_notebook(cells=[new_code_cell("ok()"), new_code_cell("\nmlflow.set_experiment(E)\nmore()")])
    book.cells[1].outputs = [
        new_output("error", ename="MlflowException", evalue="API request failed:\n Connection refused", traceback=[])
    ]
    assert describe_failure("01-x.ipynb", book) == (
        "01-x.ipynb, code cell 2 (mlflow.set_experiment(E)): MlflowException: API request failed: Connection refused"
    )
    assert describe_failure("01-x.ipynb", new_notebook(cells=[new_code_cell("ok()")])) is None


def test_the_kernelspec_is_the_sandboxs_python(tmp_path):
    folder = write_kernelspec(tmp_path, "/venv/bin/python")
    spec = json.loads((folder / "sandbox-python" / "kernel.json").read_text())
    assert spec["argv"][:3] == ["/venv/bin/python", "-m", "ipykernel_launcher"]


def test_attachments_are_written_beside_the_report_and_linked(tmp_path):
    result = ScenarioResult("notebooks", "Starter notebooks", "Notebooks", Outcome.PASSED)
    result.attachments["01-x.ipynb"] = b"{}"
    written = write_attachments([result], tmp_path)
    assert written == [tmp_path / "attachments" / "notebooks" / "01-x.ipynb"] and written[0].read_bytes() == b"{}"
    write_markdown([result], tmp_path / "checklist.md", profile="local")
    assert "(attachments/notebooks/01-x.ipynb)" in (tmp_path / "checklist.md").read_text()


def test_the_scenario_file_passes_the_static_name_check():
    path = Path(__file__).resolve().parents[2] / "scenarios" / "notebooks.py"
    assert name_problems(path.read_text(), str(path)) == []


def test_notebooks_on_one_kernel_share_its_process_but_not_their_names(tmp_path):
    """The scenario's kernel runs the notebooks one after another; each after the first starts from nothing."""
    import os

    from sandbox.scenarios.notebooks import NotebookKernel

    first, second = tmp_path / "first.ipynb", tmp_path / "second.ipynb"
    parameters = new_code_cell("PREFIX = 'default'", metadata={"tags": ["parameters"]})
    leaves = new_code_cell("import os\nLEFT_OVER = os.getpid()\nprint(LEFT_OVER)")
    nbformat.write(new_notebook(cells=[parameters, leaves]), first)
    probe = "import os\nassert 'LEFT_OVER' not in globals(), 'a leftover'\nprint(os.getpid(), PREFIX)"
    nbformat.write(new_notebook(cells=[parameters, new_code_cell(probe)]), second)
    with NotebookKernel(dict(os.environ), tmp_path) as kernel:
        ran_first = kernel.run(first, parameters={"PREFIX": "checklist-a"})
        ran_second = kernel.run(second, parameters={"PREFIX": "checklist-b"})
    assert ran_first.failure is None and ran_second.failure is None, (ran_first.failure, ran_second.failure)
    first_pid = int(ran_first.notebook.cells[-1].outputs[0]["text"])
    printed = ran_second.notebook.cells[-1].outputs[0]["text"].split()
    assert (int(printed[0]), printed[1]) == (first_pid, "checklist-b")  # the same kernel, this notebook's parameter
    assert first_pid != os.getpid()
    assert [INJECTED_TAG] == ran_second.notebook.cells[0].metadata["tags"]  # the reset, first and marked
    assert "%reset -f" in ran_second.notebook.cells[0].source and "%reset" not in ran_first.notebook.cells[0].source
