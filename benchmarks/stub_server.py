"""A stand-in inference server for load-generator tests: trivial answers, and optional stalls.

    python -m benchmarks.stub_server [--port P] [--stall-every 4] [--stall-for 1]

It speaks just enough KServe V1 for `sandbox loadtest`: `POST /v1/models/NAME:predict`
answers `{"predictions":[0]}`, `GET /v2/models/NAME` answers metadata with 8
FP64 inputs (so payloads can be shaped), anything else is a 404. Keep-alive,
HTTP/1.1, written on asyncio protocols so that it costs little per request.

With `--stall-every S --stall-for T` the whole process stops for T seconds
every S seconds (a blocking sleep on its event loop, the way a stop-the-world
pause or a stuck dependency looks from outside): nothing is read or answered
during the stall. The first stall comes S seconds after the server is ready.
It binds 127.0.0.1 only and prints `ready PORT` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import time

_BODY = b'{"predictions":[0]}'
_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
_META_BODY = (
    b'{"name":"stub","platform":"stub","inputs":['
    + b",".join(b'{"name":"f%d","datatype":"FP64","shape":[-1]}' % i for i in range(8))
    + b'],"outputs":[{"name":"predictions","datatype":"INT64","shape":[-1]}]}'
)
_META = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(_META_BODY),
    _META_BODY,
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class _Http(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end])
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17 : stop if stop >= 0 else len(lower)])
            if len(buffer) < end + 4 + length:
                return
            del buffer[: end + 4 + length]
            line = head.split(b"\r\n", 1)[0]
            method, _, rest = line.partition(b" ")
            path = rest.partition(b" ")[0]
            if method == b"POST" and path.startswith(b"/v1/models/") and path.endswith(b":predict"):
                self.transport.write(_OK)
            elif method == b"GET" and path.startswith(b"/v2/models/") and path.count(b"/") == 3:
                self.transport.write(_META)
            else:
                self.transport.write(_NOT_FOUND)


async def _stall(every: float, length: float) -> None:
    while True:
        await asyncio.sleep(every)
        time.sleep(length)  # on purpose: the whole loop stops, as in a stop-the-world pause


async def serve(port: int, stall_every: float, stall_for: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, "127.0.0.1", port, backlog=4096)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    stalls = loop.create_task(_stall(stall_every, stall_for)) if stall_every > 0 and stall_for > 0 else None
    async with server:
        await server.serve_forever()
    if stalls is not None:
        stalls.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stall-every", type=float, default=0.0)
    parser.add_argument("--stall-for", type=float, default=0.0)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.port, args.stall_every, args.stall_for))


if __name__ == "__main__":
    main()
