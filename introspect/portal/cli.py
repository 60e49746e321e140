"""`introspect portal-link --sub S [--client-id C] --scope "a b" [--return-url U] [--json]`."""

from __future__ import annotations

import argparse
from typing import Any

from introspect.config import Settings


def cmd_portal_link(args: argparse.Namespace, settings: Settings) -> int:
    """Mint a one-time portal link, as `POST /admin/portal-sessions` does."""
    # The CLI's helpers, imported here: introspect.cli imports this module to build its parser.
    from introspect.cli import ACTOR, cell, emit, run_with_authority, scope_list
    from introspect.portal.sessions import mint_link

    body: dict[str, Any] = {"sub": args.sub, "scopes": scope_list(args.scope)}
    if args.client_id is not None:
        body["client_id"] = args.client_id
    if args.return_url is not None:
        body["return_url"] = args.return_url
    minted = run_with_authority(settings, lambda a: mint_link(a, ACTOR, body))
    emit(
        args,
        minted,
        [minted["url"], f"(works once, until {cell('expires_at', minted['expires_at'])})"],
    )
    return 0


def add_portal_parser(sub: Any) -> None:
    """The `portal-link` subcommand."""
    link = sub.add_parser(
        "portal-link", help="mint a one-time link into the developer portal for a consumer"
    )
    link.add_argument("--sub", required=True, help="whose API keys the portal shows")
    link.add_argument("--client-id", help="only that client's keys; new keys are bound to it")
    link.add_argument(
        "--scope", required=True, help='what new keys may hold, space-separated, e.g. "read"'
    )
    link.add_argument("--return-url", help="a link back to your product (https, or loopback)")
    link.add_argument("--json", action="store_true", help="print one JSON object")
    link.set_defaults(handler=cmd_portal_link)
