"""The pytest entry point (`pytest11`): the plugin's options, and the fixtures only when they are asked for.

Every project that has the sandbox installed loads this module at pytest's start, so it imports pytest
alone: without `--sandbox` or `--sandbox-dir`, nothing else of the sandbox is imported and no fixture
exists. `-p sandbox.testing` loads the fixtures too (with either, once).
"""

from __future__ import annotations

import pytest

# The fixtures' module itself: `sandbox.testing`, the package, is imported already (it holds this module),
# too late for pytest to rewrite its asserts, and it only names this one (`pytest_plugins`) for `-p`.
FIXTURES_PLUGIN = "sandbox.testing.fixtures"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sandbox", "ML platform sandbox (fixtures: docs/testing.md)")
    if any("--sandbox" in option.names() for option in group.options):
        return  # `-p sandbox.testing` loaded before this entry point and added them already
    group.addoption(
        "--sandbox",
        action="store_true",
        help="turn the sandbox fixtures on: ml_sandbox starts a sandbox in a temporary folder for the session "
        "and takes it down (purged) at the end",
    )
    group.addoption(
        "--sandbox-dir",
        metavar="DIR",
        help="attach to the sandbox running in DIR instead of starting one (it stays up afterwards); implies --sandbox",
    )
    group.addoption(
        "--sandbox-profile",
        metavar="NAME",
        help="the profile: local, kind, cluster or remote [default: SANDBOX_PROFILE, sandbox.yaml's profile, "
        "else local]; remote's platform is checked, never started or taken down",
    )
    group.addoption(
        "--sandbox-config",
        metavar="FILE",
        help="the sandbox.yaml to read [default: ./sandbox.yaml when there is one], as `sandbox --config`",
    )


def wanted(config: pytest.Config) -> bool:
    """Whether the command line asks for the sandbox fixtures."""
    return bool(config.getoption("--sandbox", False) or config.getoption("--sandbox-dir", None))


def pytest_configure(config: pytest.Config) -> None:
    if wanted(config):
        config.pluginmanager.import_plugin(FIXTURES_PLUGIN)  # a no-op after `-p sandbox.testing`
