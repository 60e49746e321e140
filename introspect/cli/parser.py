"""The argument parser: every subcommand and its handler from `introspect.cli.commands`."""

from __future__ import annotations

import argparse
from typing import Any

from introspect import admin, rfc6749, signing
from introspect.cli.commands import (
    cmd_access_key_create,
    cmd_access_key_delete,
    cmd_admin_key_create,
    cmd_admin_key_list,
    cmd_admin_key_revoke,
    cmd_api_key_create,
    cmd_api_key_rotate,
    cmd_api_key_update,
    cmd_audit,
    cmd_client_create,
    cmd_client_delete,
    cmd_client_list,
    cmd_client_rotate_secret,
    cmd_client_show,
    cmd_client_update,
    cmd_keys_rotate,
    cmd_migrate,
    cmd_revoke,
    cmd_serve,
    cmd_tokens,
)

# The first line of the package docstring, as `introspect --help` shows it.
DESCRIPTION = "The `introspect` command line: parse, call the same services as the API, print."


def add_keys_parser(sub: Any) -> None:
    """`introspect keys rotate [--alg A] [--propagation-delay SECONDS] [--json]`."""
    keys = sub.add_parser("keys", help="manage signing keys").add_subparsers(
        dest="action", required=True
    )
    rotate = keys.add_parser("rotate", help="publish a new signing key; it signs after a delay")
    rotate.add_argument("--alg", choices=signing.ALGORITHMS, default=signing.DEFAULT_ALG)
    rotate.add_argument(
        "--propagation-delay",
        type=int,
        default=signing.DEFAULT_PROPAGATION_DELAY,
        help="seconds between publishing the key and signing with it (default %(default)s)",
    )
    _json_flag(rotate)
    rotate.set_defaults(handler=cmd_keys_rotate)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, help="at most this many (default 50, max 500)")
    parser.add_argument("--cursor", help="the next_cursor of the previous page")
    _json_flag(parser)


def _audience_options(parser: argparse.ArgumentParser, *, clearable: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--audience", action="append", help="repeatable; replaces the list")
    if clearable:
        group.add_argument("--no-audiences", action="store_true", help="clear the audiences")


def _client_options(parser: argparse.ArgumentParser, *, create: bool) -> None:
    parser.add_argument("--name", required=create)
    parser.add_argument("--scope", help='space-separated, e.g. "read write"')
    _audience_options(parser, clearable=not create)
    parser.add_argument(
        "--introspect", action=argparse.BooleanOptionalAction, help="may call /introspect"
    )
    parser.add_argument("--token-ttl", type=int, help="access token lifetime in seconds")
    parser.add_argument("--token-format", choices=("opaque", "jwt"))
    parser.add_argument("--jwks", help="a JWK Set as JSON, for private_key_jwt")
    parser.add_argument(
        "--auth-method",
        choices=rfc6749.REGISTRABLE_AUTH_METHODS,
        help="token_endpoint_auth_method (default client_secret_basic;"
        " private_key_jwt needs a jwks and gets no secret)",
    )
    _json_flag(parser)


def _grace_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--grace-period",
        type=int,
        default=0,
        metavar="SECONDS",
        help=f"how long the old {what} keeps working (default 0)",
    )
    _json_flag(parser)


def _at_least_one(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    top = argparse.ArgumentParser(prog="introspect", description=DESCRIPTION)
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--admin-port", type=int, help="serve the admin API on this port only")
    serve.add_argument(
        "--workers",
        type=_at_least_one,
        help="worker processes sharing the port (default: one per CPU this process may use)",
    )
    serve.add_argument("--no-migrate", action="store_true")
    serve.set_defaults(handler=cmd_serve)

    mig = sub.add_parser("migrate", help="apply the SQL migrations")
    mig.set_defaults(handler=cmd_migrate)

    client = sub.add_parser("client", help="manage clients").add_subparsers(
        dest="action", required=True
    )
    create = client.add_parser("create", help="register a client")
    _client_options(create, create=True)
    create.set_defaults(handler=cmd_client_create)
    listing = client.add_parser("list", help="list clients")
    _paging(listing)
    listing.set_defaults(handler=cmd_client_list)
    show = client.add_parser("show", help="show one client")
    show.add_argument("client_id")
    _json_flag(show)
    show.set_defaults(handler=cmd_client_show)
    update = client.add_parser("update", help="change a client")
    update.add_argument("client_id")
    _client_options(update, create=False)
    state = update.add_mutually_exclusive_group()
    state.add_argument("--disable", dest="disabled", action="store_const", const=True)
    state.add_argument("--enable", dest="disabled", action="store_const", const=False)
    update.set_defaults(handler=cmd_client_update)
    delete = client.add_parser("delete", help="disable a client and revoke all it holds")
    delete.add_argument("client_id")
    _json_flag(delete)
    delete.set_defaults(handler=cmd_client_delete)
    rotate = client.add_parser("rotate-secret", help="issue a new client secret")
    rotate.add_argument("client_id")
    _grace_option(rotate, "secret")
    rotate.set_defaults(handler=cmd_client_rotate_secret)
    access = client.add_parser(
        "access-key", help="key pairs for private_key_jwt; the private key shown once"
    ).add_subparsers(dest="key_action", required=True)
    acc_create = access.add_parser("create", help="make a key pair; print its kid and access key")
    acc_create.add_argument("client_id")
    _json_flag(acc_create)
    acc_create.set_defaults(handler=cmd_access_key_create)
    acc_delete = access.add_parser("delete", help="remove a key from the client's jwks")
    acc_delete.add_argument("client_id")
    acc_delete.add_argument("kid")
    _json_flag(acc_delete)
    acc_delete.set_defaults(handler=cmd_access_key_delete)

    keys = sub.add_parser("api-key", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    kcreate = keys.add_parser("create", help="issue an API key")
    kcreate.add_argument("--client-id")
    kcreate.add_argument("--sub")
    kcreate.add_argument("--scope", required=True, help='space-separated, e.g. "read write"')
    _audience_options(kcreate, clearable=False)
    kcreate.add_argument("--expires-in", type=int, metavar="SECONDS", help="default: never")
    kcreate.add_argument("--metadata", help="a JSON object, at most 4 KiB")
    _json_flag(kcreate)
    kcreate.set_defaults(handler=cmd_api_key_create)
    kupdate = keys.add_parser("update", help="change a live API key")
    kupdate.add_argument("id")
    kupdate.add_argument("--scope", help='space-separated, e.g. "read write"')
    _audience_options(kupdate, clearable=True)
    expiry = kupdate.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", type=int, metavar="SECONDS")
    expiry.add_argument("--expires-at", type=int, metavar="EPOCH_SECONDS")
    expiry.add_argument("--never-expires", action="store_true")
    metadata = kupdate.add_mutually_exclusive_group()
    metadata.add_argument("--metadata", help="a JSON object, at most 4 KiB")
    metadata.add_argument("--no-metadata", action="store_true", help="remove the metadata")
    _json_flag(kupdate)
    kupdate.set_defaults(handler=cmd_api_key_update)
    krotate = keys.add_parser("rotate", help="replace an API key by a new one")
    krotate.add_argument("id")
    _grace_option(krotate, "key")
    krotate.set_defaults(handler=cmd_api_key_rotate)

    akeys = sub.add_parser("admin-key", help="manage admin API keys").add_subparsers(
        dest="action", required=True
    )
    acreate = akeys.add_parser("create", help="mint a key for the admin API")
    acreate.add_argument("--name", required=True)
    acreate.add_argument(
        "--role",
        choices=admin.ROLES,
        default="admin",
        help="admin: every admin route; auditor: reads (GET) only (default %(default)s)",
    )
    acreate.add_argument("--expires-in", type=int, metavar="SECONDS", help="default: never")
    _json_flag(acreate)
    acreate.set_defaults(handler=cmd_admin_key_create)
    alist = akeys.add_parser("list", help="list admin keys (never the keys themselves)")
    _paging(alist)
    alist.set_defaults(handler=cmd_admin_key_list)
    arevoke = akeys.add_parser("revoke", help="revoke an admin key, at once everywhere")
    arevoke.add_argument("id")
    _json_flag(arevoke)
    arevoke.set_defaults(handler=cmd_admin_key_revoke)

    revoke = sub.add_parser("revoke", help="revoke credentials")
    selector = revoke.add_mutually_exclusive_group(required=True)
    selector.add_argument(
        "--token",
        metavar="-",
        help="a presented credential, read from stdin with `--token -` (a value given here"
        " instead shows in the process list)",
    )
    selector.add_argument("--id", help="a credential id")
    selector.add_argument("--jti", help="a credential's jti (its id)")
    selector.add_argument("--client-id", help="every access token and API key of a client")
    selector.add_argument("--sub", help="every credential of a subject")
    _json_flag(revoke)
    revoke.set_defaults(handler=cmd_revoke)

    tokens = sub.add_parser("tokens", help="list credentials (never their values)")
    tokens.add_argument("--client-id")
    tokens.add_argument("--sub")
    tokens.add_argument("--kind", choices=("access_token", "api_key"))
    live = tokens.add_mutually_exclusive_group()
    live.add_argument("--active", dest="active", action="store_const", const=True)
    live.add_argument("--inactive", dest="active", action="store_const", const=False)
    _paging(tokens)
    tokens.set_defaults(handler=cmd_tokens)

    audit = sub.add_parser("audit", help="read the audit log, newest first")
    audit.add_argument("--action", choices=sorted(admin.ACTIONS))
    audit.add_argument("--target-id")
    audit.add_argument("--actor")
    _paging(audit)
    audit.set_defaults(handler=cmd_audit)

    add_keys_parser(sub)
    return top
