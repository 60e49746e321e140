"""The ceiling: what aiohttp itself can do here, with no I/O.

`python -m bench.ceiling --port P --workers N` runs N processes on one port
with SO_REUSEPORT, like `introspect serve`. Each answers `POST /introspect`
the way the real server's fastest path does on the outside: it reads the
form body with the server's own parser, requires `token`, and answers an
active RFC 7662 answer of the usual size, serialized by orjson, with the
same headers. No cache, no store, no authentication: every scenario of the
bench is reported as a percentage of this.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import signal
import time

import orjson
from aiohttp import web

from introspect import forms
from introspect.server import run_loop

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def sample_answer() -> dict[str, object]:
    """An active answer shaped like the server's for a seeded access token."""
    now = int(time.time())
    return {
        "active": True,
        "scope": "read write",
        "sub": "client_0123456789ABCDEFGHIJKL",
        "iss": "http://127.0.0.1:8080",
        "iat": now,
        "nbf": now,
        "jti": "tok_0123456789ABCDEFGHIJKL",
        "token_type": "Bearer",
        "kind": "access_token",
        "client_id": "client_0123456789ABCDEFGHIJKL",
        "aud": "https://api.example.com",
        "exp": now + 3600,
    }


async def introspect(request: web.Request) -> web.Response:
    """Parse the form like the server, then answer orjson with no I/O."""
    params = forms.single(forms.parse_form(await request.read()))
    if "token" not in params:
        return web.json_response({"error": "invalid_request"}, status=400)
    answer = sample_answer()
    answer["jti"] = params["token"][:26]
    return web.Response(
        body=orjson.dumps(answer), content_type="application/json", headers=NO_STORE
    )


async def _serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = web.Application()
    app.router.add_post("/introspect", introspect)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=True, backlog=1024).start()
    await stop.wait()
    await runner.cleanup()


def _worker(host: str, port: int) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(_serve(host, port))  # the server's event loop, for a fair comparison


def main() -> None:
    """Run N ceiling workers on one port until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(target=_worker, args=(args.host, args.port)) for _ in range(args.workers)
    ]

    def _stop(_signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()


if __name__ == "__main__":
    main()
