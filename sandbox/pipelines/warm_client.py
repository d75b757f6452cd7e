"""What a kfp.local step runs as its Python while a warm interpreter serves the runner (`sandbox.pipelines.warm`).

    python -I -S warm_client.py SOCKET REAL_PYTHON -m MODULE ARGS...

It hands the warm interpreter its stdin, stdout and stderr, its arguments, environment and working folder; the
warm interpreter forks a child that runs ``-m MODULE`` with them, and this process exits with the child's code.
When no warm interpreter answers (gone, never started, or the command is not ``-m MODULE``), it becomes
REAL_PYTHON with the same arguments, so the step runs either way, and never twice: once the warm interpreter says
it started the step, a lost connection is a failure of the step, not a reason to run it again.

Standard library only, and run with -I -S: it starts in milliseconds, which is the point.
"""

import json
import os
import socket
import sys

STARTED = b"started\n"


def main() -> None:
    socket_path, real_python, *args = sys.argv[1:]
    started = False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(socket_path)
            body = json.dumps({"argv": args, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
            socket.send_fds(connection, [b"%012d" % len(body)], [0, 1, 2])
            connection.sendall(body)
            reader = connection.makefile("rb")
            started = reader.readline() == STARTED
            if not started:
                raise ValueError("the warm interpreter did not start the step")
            code = int(reader.read().strip())  # the step's exit code, once it has ended
    except (OSError, ValueError):
        if started:
            sys.stderr.write("the warm interpreter was lost while it ran this step\n")
            sys.exit(1)
        os.execv(real_python, [real_python, *args])
    sys.exit(code)


if __name__ == "__main__":
    main()
