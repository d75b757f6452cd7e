"""Readiness: poll a real request (SQL, S3, HTTP) until it succeeds, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

from sandbox.errors import ServiceStartError
from sandbox.profiles.local.process import ManagedProcess

# A probe returns normally when the service is ready and raises when it is not;
# the last exception becomes part of the time-out message.
Probe = Callable[[], None]


def wait_ready(
    title: str,
    probe: Probe,
    process: ManagedProcess,
    *,
    timeout: float,
    interval: float = 0.2,
) -> float:
    """Wait until ``probe`` passes; return the seconds it took.

    Fails fast when the process exits, and on time-out; both errors carry the
    service's last log lines.
    """
    started = time.monotonic()
    last_error: BaseException | None = None
    while True:
        try:
            probe()
            return time.monotonic() - started
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = exc
        code = process.exited()
        if code is not None:
            raise ServiceStartError(
                f"{title} exited with code {code} while starting",
                hint=f"read the whole log: {process.log_file}",
                details=process.log_tail(),
            )
        if time.monotonic() - started > timeout:
            raise ServiceStartError(
                f"{title} was not ready after {timeout:.0f}s (last check: {_short(last_error)})",
                hint=f"read the whole log: {process.log_file}; raise startup_timeout if the machine is slow",
                details=process.log_tail(),
            )
        time.sleep(interval)


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]
