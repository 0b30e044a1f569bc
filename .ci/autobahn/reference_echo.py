#!/usr/bin/env python3
"""A WebSocket echo server that is not ours, for validating the Autobahn harness only.

    python3 .ci/autobahn/reference_echo.py [--host 127.0.0.1] [--port 9001]
                                           [--require-subprotocol peerd.v1]

Built on the `websockets` package (`pip install websockets==17.4`; .ci/autobahn/selftest.sh
installs it in a venv of its own). It echoes every message back as it came: text as text,
binary as binary. Subprotocol-agnostic: it accepts the first subprotocol the client offers,
or none when none is offered. With --require-subprotocol NAME it refuses (HTTP 400) any
handshake that does not offer NAME, the way peerd's peer endpoint will; a harness that
forgets to offer the subprotocol then fails every case instead of passing quietly.

No permessage-deflate (compression=None), no keepalive pings of its own (they would show
up as unexpected frames in the cases), no size limits (case 9.* sends 16 MiB messages, and
4 MiB ones in 65536 fragments).
The first request's headers are printed, so a run shows what wstest sends.
"""

import argparse
import asyncio
import http
import os
import signal
import sys

# websockets fails a message of more than 4096 frames with 1009 "too many fragments" (its
# asyncio API reads this once, at import); cases 9.3.* and 9.4.* send 4 MiB in 64-byte frames.
os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 20))

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

seen_request = False


async def echo(ws):
    try:
        async for message in ws:  # str for text frames, bytes for binary
            await ws.send(message)
    except ConnectionClosed:
        pass  # many cases fail the connection on purpose; websockets has answered already


def agnostic(ws, offered):
    return offered[0] if offered else None


def make_process_request(required):
    def process_request(ws, request):
        global seen_request
        if not seen_request:
            seen_request = True
            print("reference_echo: first request: GET %s" % request.path, flush=True)
            for name, value in request.headers.raw_items():
                print("reference_echo:   %s: %s" % (name, value), flush=True)
        if required is None:
            return None
        offered = [p.strip() for v in request.headers.get_all("Sec-WebSocket-Protocol") for p in v.split(",")]
        if required not in offered:
            return ws.respond(http.HTTPStatus.BAD_REQUEST, "subprotocol %s required\n" % required)
        return None

    return process_request


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--require-subprotocol", metavar="NAME")
    args = ap.parse_args()

    def select(ws, offered):
        if args.require_subprotocol is not None:
            return args.require_subprotocol if args.require_subprotocol in offered else None
        return agnostic(ws, offered)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)

    async with serve(
        echo,
        args.host,
        args.port,
        select_subprotocol=select,
        process_request=make_process_request(args.require_subprotocol),
        compression=None,
        ping_interval=None,
        max_size=None,
        max_queue=None,
        open_timeout=10,
        close_timeout=5,
    ):
        print("reference_echo: listening on ws://%s:%d" % (args.host, args.port), flush=True)
        await stop
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
