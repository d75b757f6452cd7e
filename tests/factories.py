"""Objects tests build again and again, made in one place."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sandbox.endpoints import Endpoints

_HOLD_LOCK = """
import sys, time
from pathlib import Path
from sandbox.profiles.locking import exclusive_lock
with exclusive_lock(Path(sys.argv[1]), sys.argv[2], folder=Path(sys.argv[1]).parent):
    print("held", flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def lock_held_elsewhere(lock_file: Path, command: str) -> Iterator[int]:
    """``lock_file`` held by ANOTHER process (as for `sandbox COMMAND`) while the block runs; yields its pid.

    The holder is killed when the block ends, so a crashed holder's release is what the block's end shows.
    """
    args = [sys.executable, "-c", _HOLD_LOCK, str(lock_file), command]
    holder = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def make_endpoints(**overrides: Any) -> Endpoints:
    """Endpoints of a stack that is not there (closed loopback ports); override what a test looks at."""
    values: dict[str, Any] = {
        "profile": "local",
        "mlflow_tracking_uri": "http://127.0.0.1:1",
        "s3_endpoint_url": "http://127.0.0.1:2",
        "s3_access_key": "k",
        "s3_secret_key": "s",
        "postgres_url": "postgresql://u:p@127.0.0.1:3/mlflow",
    }
    values.update(overrides)
    return Endpoints(**values)
