"""Errors the CLI turns into one readable line, a hint, and an exit code."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes, stable for scripts and CI."""

    OK = 0
    FAILED = 1  # a step failed (a service did not become ready, a check failed)
    USAGE = 2  # bad input: unknown profile, bad config value, bad flag
    LOCKED = 3  # another sandbox command holds the sandbox directory
    NOT_RUNNING = 4  # the command needs a running sandbox
    PREFLIGHT = 5  # the machine lacks something the profile needs
    SLO_FAILED = 6  # a load test missed an SLO or regressed against its baseline
    DRIFT = 7  # a drift check found drift


class SandboxError(Exception):
    """An error a user can act on.

    ``message`` says what failed, ``hint`` says how to fix it, ``details`` carries
    supporting text (for example the last lines of a service's log).
    """

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None, details: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details


class ConfigError(SandboxError):
    exit_code = ExitCode.USAGE


class PortInUseError(SandboxError):
    exit_code = ExitCode.USAGE


class LockedError(SandboxError):
    """Another command holds the sandbox's lock (`sandbox.profiles.locking`)."""

    exit_code = ExitCode.LOCKED


# Seconds a process started with this variable waits for a held sandbox lock before `LockedError`; unset or 0:
# refused at once. `sandbox checklist --jobs N` sets it for its scenarios (and the notebook kernels they
# start), so two that deploy at the same moment take turns instead of one failing.
LOCK_WAIT_ENV = "ML_SANDBOX_LOCK_WAIT_S"


class NotRunningError(SandboxError):
    exit_code = ExitCode.NOT_RUNNING


class PreflightError(SandboxError):
    exit_code = ExitCode.PREFLIGHT


class ServiceStartError(SandboxError):
    exit_code = ExitCode.FAILED
