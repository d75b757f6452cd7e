"""`python -m sandbox.profiles.local.supervisor --dir DIR`: the supervisor process (`daemon.main`)."""

from sandbox.profiles.local.supervisor.daemon import main

raise SystemExit(main())
