"""Load tests against inference endpoints: the target, the runs and their gates, reports.

- `target`: what a run hits (a deployed name or an inference URL) and its payload rows;
- `runner`: the options, one run (open loop, or Locust in its own process), the capacity search and the
  comparison of two targets, each with its verdicts and report;
- `engine` (Locust's library API, in its own process), `users` and `locust_shapes` (Locust's users and load
  shape; they import Locust, so only the engine's process and `loadtests/` do), `openloop` (the open-loop
  generator), `shapes` (load over time), `slo` (gates), `capacity`, `compare`, `histogram`, `report`.

The request bodies are `sandbox.wire`'s. The names below are the API that the CLI, workloads and benchmarks
use: `from sandbox.loadtest import LoadTestOptions, Target, run`.
"""

from sandbox.loadtest.runner import (
    SATURATION_PERCENT,
    LoadTestOptions,
    compare_targets,
    finalize,
    find_capacity,
    parse_duration,
    request_template,
    rows_for,
    run,
    run_once,
)
from sandbox.loadtest.target import Target, default_report_dir, payload_rows, resolve_target

__all__ = [
    "SATURATION_PERCENT",
    "LoadTestOptions",
    "Target",
    "compare_targets",
    "default_report_dir",
    "finalize",
    "find_capacity",
    "parse_duration",
    "payload_rows",
    "request_template",
    "resolve_target",
    "rows_for",
    "run",
    "run_once",
]
