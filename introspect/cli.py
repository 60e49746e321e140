"""The `introspect` command line: parse, call the same services as the API, print.

Every command works on the configured database directly (so the first
admin key can be minted before any server runs) through the same
`Authority` as the HTTP API, so its changes publish the same invalidations.
`--json` prints one JSON object on stdout and nothing else there; failures
exit non-zero with a one-line error on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson

from introspect import logs, runtime
from introspect.config import ConfigError, Settings, load_settings
from introspect.embedded import EmbeddedError
from introspect.errors import AdminError
from introspect.service import Authority, open_authority

T = TypeVar("T")


class CommandError(Exception):
    """A failure to report on one line and exit 1."""


def run_with_authority(settings: Settings, operation: Callable[[Authority], Awaitable[T]]) -> T:
    """Run one operation against the configured stores (embedded ones started if needed)."""
    with runtime.stores(settings) as found:
        from introspect.server import apply_migrations

        async def main() -> T:
            await apply_migrations(found.database_url)
            async with open_authority(
                settings, found.database_url, found.redis_url, listen=False
            ) as authority:
                return await operation(authority)

        return asyncio.run(main())


def emit(args: argparse.Namespace, data: dict[str, Any], lines: Sequence[str]) -> None:
    """Print `data` as one JSON object with --json, else the human lines."""
    if getattr(args, "json", False):
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
    else:
        for line in lines:
            print(line)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """introspect serve."""
    from introspect.server import serve

    settings = settings.with_listen(args.host, args.port)
    return serve(settings, workers=args.workers, run_migrations=not args.no_migrate)


def cmd_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    """introspect migrate."""
    from introspect.server import apply_migrations

    with runtime.stores(settings) as found:
        applied = asyncio.run(apply_migrations(found.database_url))
    print("applied: " + ", ".join(applied) if applied else "up to date")
    return 0


def cmd_client_create(args: argparse.Namespace, settings: Settings) -> int:
    """introspect client create."""

    async def op(authority: Authority) -> tuple[str, str]:
        client, secret = await authority.create_client(
            actor="cli",
            name=args.name,
            scopes=args.scope.split() if args.scope else [],
            audiences=args.audience or [],
            can_introspect=args.introspect,
        )
        return client.client_id, secret

    client_id, secret = run_with_authority(settings, op)
    emit(
        args,
        {"client_id": client_id, "client_secret": secret},
        [f"client_id:     {client_id}", f"client_secret: {secret}  (shown once)"],
    )
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    top = argparse.ArgumentParser(prog="introspect", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--no-migrate", action="store_true")
    serve.set_defaults(handler=cmd_serve)

    mig = sub.add_parser("migrate", help="apply the SQL migrations")
    mig.set_defaults(handler=cmd_migrate)

    client = sub.add_parser("client", help="manage clients").add_subparsers(
        dest="action", required=True
    )
    create = client.add_parser("create", help="register a client")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", default="", help='space-separated, e.g. "read write"')
    create.add_argument("--audience", action="append", help="repeatable")
    create.add_argument("--introspect", action="store_true", help="may call /introspect")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=cmd_client_create)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `introspect` console script."""
    args = parser().parse_args(argv)
    logs.setup()
    try:
        settings = load_settings()
        return int(args.handler(args, settings))
    except (ConfigError, EmbeddedError, CommandError) as exc:
        print(f"introspect: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except AdminError as exc:
        print(f"introspect: {exc.description}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
