"""The supervisor: restarts what crashes, on the ports it had, and keeps the logs bounded.

`sandbox up` starts it last, as a background process of the sandbox (`<dir>/supervisor/`:
service.pid, service.log, state.json, settings.json; it binds no port), and `sandbox down`
stops it first. Every `supervisor.interval_s` (1 s) it

- rotates every `service.log` past `logs.max_bytes` (the services', the deployments', its own:
  `logrotate.py`, copy-then-truncate, so a line written during the truncation can be lost);
- checks each service (postgres, s3, mlflow, and notebooks unless `notebooks.enabled` is false)
  and each recorded deployment (model servers before
  the routers in front of them): one whose process is gone is restarted by the code `up` runs
  for it (`LocalService.prepare` and `start`; `LocalProcessRuntime.restart` of one record), on the ports
  in ports.json, never new ones. Only that component restarts; one whose dependencies are down
  waits for them (MLflow for PostgreSQL and S3, a deployment for all three, a router for its
  variants);
- paces the restarts of each component (`RestartPolicy`): the first after `backoff_initial_s`,
  each next one after twice the wait before (at most `backoff_max_s`), counting the restarts of
  the last `window_s`; a component that would need more than `max_restarts` of them is marked
  crash-looping and left alone until `sandbox up` clears the mark (it sends SIGHUP);
- re-reads what is recorded before it calls a missing process a crash: `serve undeploy` forgets the
  record before it stops the process, so an undeployed deployment is "NAME was undeployed", never a crash.

A restart holds the sandbox lock (`state.exclusive_lock`), taken without waiting: when a command
holds it (`up`, `down`, `serve deploy`, ...) that command owns the stack just now, and the round is
skipped. Inside the lock the component is looked up afresh, and restarted only if it is still
dead and still wanted (a deployment undeployed meanwhile is no longer recorded). `up` and `down`
that find the supervisor in the middle of a restart stop it (`command_lock`) instead of failing:
on SIGTERM it stops what it was starting and exits at once.

Beside the rounds, one thread ships the inference journals of every model server of the sandbox to
PostgreSQL (`daemon._start_shipping`, `inference_log.ship_journals`): servers started while the supervisor
is enabled only append (`inference_log.SHIPPER_ENV`), and a journal whose server ships it itself is left to it.

Every decision is a line in its log and in `state.json` (0600, replaced atomically), which
`sandbox status` sums up in its `supervisor` row.

One module per responsibility:

- `policy.py`: `RestartPolicy`, backoff and the crash-loop limit on a clock that is handed in (pure);
- `loop.py`: `Supervisor`, the rounds (reap, rotate, check, restart under the lock, save the state);
- `components.py`: what it watches (`ServiceComponent`, `DeploymentComponent`, `LocalComponents`);
- `handle.py`: `SupervisorHandle` and `command_lock`, what `up`, `down`, `status` and `logs` use;
- `daemon.py`: the process itself (`main`), which `python -m sandbox.profiles.local.supervisor --dir DIR` runs.
"""
