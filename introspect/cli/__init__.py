"""The `introspect` command line: parse, call the same services as the API, print.

Every admin command works on the configured database directly (so the first
admin key can be minted before any server runs) through the same
`introspect.admin` operations as the HTTP API, with the same validation, the
same audit entries (actor `cli`) and the same invalidations. `--json` prints
one JSON object on stdout and nothing else there; otherwise a readable table
or a few lines. Failures exit non-zero with a one-line error on stderr; logs
go to stderr too, at WARNING, except for `serve`.

`parser` declares every subcommand and the handler it runs, `commands` holds
the handlers, `output` the printing; `main` here ties them together.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError

from introspect import logs
from introspect.cli.commands import CommandError
from introspect.cli.parser import parser
from introspect.config import ConfigError, load_settings
from introspect.embedded import EmbeddedError
from introspect.errors import AdminError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `introspect` console script."""
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    logs.setup(logging.INFO if args.command == "serve" else logging.WARNING)
    try:
        settings = load_settings()
        return int(args.handler(args, settings))
    except (ConfigError, EmbeddedError, CommandError) as exc:
        print(f"introspect: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except AdminError as exc:
        print(f"introspect: {exc.description}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError, asyncpg.PostgresConnectionError, RedisConnectionError) as exc:
        print(f"introspect: a store is unreachable ({type(exc).__name__})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
