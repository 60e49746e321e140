"""The argument parser: every subcommand and its handler from `introspect.cli.commands`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
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
    cmd_dev_cluster,
    cmd_keys_rotate,
    cmd_migrate,
    cmd_portal_link,
    cmd_revoke,
    cmd_serve,
    cmd_tokens,
)
from introspect.config import Settings

# What a subcommand runs: its exit status from the parsed arguments and the settings.
Handler = Callable[[argparse.Namespace, Settings], int]


def add_keys_parser(sub: Any) -> None:
    """`introspect keys rotate [--alg A] [--propagation-delay SECONDS] [--json]`."""
    keys = _group(sub, "keys", "manage signing keys")
    rotate = _command(
        keys, "rotate", "publish a new signing key; it signs after a delay", cmd_keys_rotate
    )
    rotate.add_argument("--alg", choices=signing.ALGORITHMS, default=signing.DEFAULT_ALG)
    rotate.add_argument(
        "--propagation-delay",
        type=int,
        default=signing.DEFAULT_PROPAGATION_DELAY,
        help="seconds between publishing the key and signing with it (default %(default)s)",
    )
    _json_flag(rotate)


def _group(sub: Any, name: str, help_text: str, dest: str = "action") -> Any:
    """A command whose subcommands (one required) are added to what this returns."""
    return sub.add_parser(name, help=help_text).add_subparsers(dest=dest, required=True)


def _command(
    group: Any, name: str, help_text: str, handler: Handler, *positionals: str
) -> argparse.ArgumentParser:
    """A subcommand that runs `handler`, with its positional arguments; options follow."""
    command: argparse.ArgumentParser = group.add_parser(name, help=help_text)
    for positional in positionals:
        command.add_argument(positional)
    command.set_defaults(handler=handler)
    return command


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
    _limit_options(parser, clearable=not create)
    _json_flag(parser)


def _rate_limit(text: str) -> dict[str, Any]:
    """NAME=LIMIT/WINDOW, e.g. minute=60/60 (the admin API validates the values)."""
    name, eq, rest = text.partition("=")
    limit, slash, window = rest.partition("/")
    if not (eq and slash and limit.isdigit() and window.isdigit()):
        raise argparse.ArgumentTypeError("must be NAME=LIMIT/WINDOW_SECONDS, e.g. minute=60/60")
    return {"name": name, "limit": int(limit), "window": int(window)}


def _refill(text: str) -> dict[str, int]:
    """AMOUNT/INTERVAL, e.g. 1000/86400."""
    amount, slash, interval = text.partition("/")
    if not (slash and amount.isdigit() and interval.isdigit()):
        raise argparse.ArgumentTypeError("must be AMOUNT/INTERVAL_SECONDS, e.g. 1000/86400")
    return {"amount": int(amount), "interval": int(interval)}


def _limit_options(parser: argparse.ArgumentParser, *, clearable: bool) -> None:
    """--rate-limit (repeatable), --credits and --refill; on updates, flags that clear them."""
    windows = parser.add_mutually_exclusive_group()
    windows.add_argument(
        "--rate-limit",
        action="append",
        type=_rate_limit,
        metavar="NAME=LIMIT/WINDOW",
        help="at most LIMIT uses per WINDOW seconds; repeatable (up to 4); replaces the list",
    )
    credits = parser.add_mutually_exclusive_group()
    credits.add_argument("--credits", type=int, metavar="N", help="set the remaining credits")
    parser.add_argument(
        "--refill",
        type=_refill,
        metavar="AMOUNT/INTERVAL",
        help="with --credits: set credits back to AMOUNT every INTERVAL seconds (>= 60)",
    )
    if clearable:
        windows.add_argument("--no-rate-limits", action="store_true", help="remove rate limits")
        credits.add_argument("--no-credits", action="store_true", help="remove the credits")


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


def parser(description: str) -> argparse.ArgumentParser:
    """The argument parser of every subcommand, `description` heading its --help."""
    top = argparse.ArgumentParser(prog="introspect", description=description)
    sub = top.add_subparsers(dest="command", required=True)

    serve = _command(sub, "serve", "run the server", cmd_serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--admin-port", type=int, help="serve the admin API on this port only")
    serve.add_argument(
        "--workers",
        type=_at_least_one,
        help="worker processes sharing the port (default: one per CPU this process may use)",
    )
    serve.add_argument("--no-migrate", action="store_true")
    _command(sub, "migrate", "apply the SQL migrations", cmd_migrate)
    cluster = _command(
        sub, "dev-cluster", "run a 3+3 Valkey Cluster on loopback until stopped", cmd_dev_cluster
    )
    cluster.add_argument("--dir", help="where the nodes keep their files (default: a temp dir)")

    _add_client_commands(sub)
    _add_api_key_commands(sub)
    _add_admin_key_commands(sub)
    _add_revocation_and_listings(sub)
    add_keys_parser(sub)
    _add_portal_link(sub)
    return top


def _add_client_commands(sub: Any) -> None:
    """`introspect client create|list|show|update|delete|rotate-secret|access-key`."""
    client = _group(sub, "client", "manage clients")
    _client_options(_command(client, "create", "register a client", cmd_client_create), create=True)
    _paging(_command(client, "list", "list clients", cmd_client_list))
    _json_flag(_command(client, "show", "show one client", cmd_client_show, "client_id"))
    update = _command(client, "update", "change a client", cmd_client_update, "client_id")
    _client_options(update, create=False)
    state = update.add_mutually_exclusive_group()
    state.add_argument("--disable", dest="disabled", action="store_const", const=True)
    state.add_argument("--enable", dest="disabled", action="store_const", const=False)
    delete_help = "disable a client and revoke all it holds"
    _json_flag(_command(client, "delete", delete_help, cmd_client_delete, "client_id"))
    rotate_help = "issue a new client secret"
    rotate = _command(client, "rotate-secret", rotate_help, cmd_client_rotate_secret, "client_id")
    _grace_option(rotate, "secret")
    access = _group(
        client,
        "access-key",
        "key pairs for private_key_jwt; the private key shown once",
        dest="key_action",
    )
    create_help = "make a key pair; print its kid and access key"
    _json_flag(_command(access, "create", create_help, cmd_access_key_create, "client_id"))
    delete_help = "remove a key from the client's jwks"
    _json_flag(_command(access, "delete", delete_help, cmd_access_key_delete, "client_id", "kid"))


def _add_api_key_commands(sub: Any) -> None:
    """`introspect api-key create|update|rotate`."""
    keys = _group(sub, "api-key", "manage API keys")
    create = _command(keys, "create", "issue an API key", cmd_api_key_create)
    create.add_argument("--client-id")
    create.add_argument("--sub")
    create.add_argument("--scope", required=True, help='space-separated, e.g. "read write"')
    _audience_options(create, clearable=False)
    create.add_argument("--expires-in", type=int, metavar="SECONDS", help="default: never")
    create.add_argument("--metadata", help="a JSON object, at most 4 KiB")
    create.add_argument("--name", help="a name to tell the key by (at most 100 characters)")
    _limit_options(create, clearable=False)
    _json_flag(create)
    update = _command(keys, "update", "change a live API key", cmd_api_key_update, "id")
    update.add_argument("--scope", help='space-separated, e.g. "read write"')
    _audience_options(update, clearable=True)
    expiry = update.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", type=int, metavar="SECONDS")
    expiry.add_argument("--expires-at", type=int, metavar="EPOCH_SECONDS")
    expiry.add_argument("--never-expires", action="store_true")
    metadata = update.add_mutually_exclusive_group()
    metadata.add_argument("--metadata", help="a JSON object, at most 4 KiB")
    metadata.add_argument("--no-metadata", action="store_true", help="remove the metadata")
    update.add_argument("--name", help="rename the key")
    _limit_options(update, clearable=True)
    _json_flag(update)
    rotate_help = "replace an API key by a new one"
    _grace_option(_command(keys, "rotate", rotate_help, cmd_api_key_rotate, "id"), "key")


def _add_admin_key_commands(sub: Any) -> None:
    """`introspect admin-key create|list|revoke`."""
    keys = _group(sub, "admin-key", "manage admin API keys")
    create = _command(keys, "create", "mint a key for the admin API", cmd_admin_key_create)
    create.add_argument("--name", required=True)
    create.add_argument(
        "--role",
        choices=admin.ROLES,
        default="admin",
        help="admin: every admin route; auditor: reads (GET) only (default %(default)s)",
    )
    create.add_argument("--expires-in", type=int, metavar="SECONDS", help="default: never")
    _json_flag(create)
    list_help = "list admin keys (never the keys themselves)"
    _paging(_command(keys, "list", list_help, cmd_admin_key_list))
    revoke_help = "revoke an admin key, at once everywhere"
    _json_flag(_command(keys, "revoke", revoke_help, cmd_admin_key_revoke, "id"))


def _add_revocation_and_listings(sub: Any) -> None:
    """`introspect revoke`, `introspect tokens` and `introspect audit`."""
    revoke = _command(sub, "revoke", "revoke credentials", cmd_revoke)
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

    tokens = _command(sub, "tokens", "list credentials (never their values)", cmd_tokens)
    tokens.add_argument("--client-id")
    tokens.add_argument("--sub")
    tokens.add_argument("--kind", choices=("access_token", "api_key"))
    live = tokens.add_mutually_exclusive_group()
    live.add_argument("--active", dest="active", action="store_const", const=True)
    live.add_argument("--inactive", dest="active", action="store_const", const=False)
    _paging(tokens)

    audit = _command(sub, "audit", "read the audit log, newest first", cmd_audit)
    audit.add_argument("--action", choices=sorted(admin.ACTIONS))
    audit.add_argument("--target-id")
    audit.add_argument("--actor")
    _paging(audit)


def _add_portal_link(sub: Any) -> None:
    """`introspect portal-link`."""
    help_text = "mint a one-time link into the developer portal for a consumer"
    link = _command(sub, "portal-link", help_text, cmd_portal_link)
    link.add_argument("--sub", required=True, help="whose API keys the portal shows")
    link.add_argument("--client-id", help="only that client's keys; new keys are bound to it")
    link.add_argument(
        "--scope", required=True, help='what new keys may hold, space-separated, e.g. "read"'
    )
    link.add_argument("--return-url", help="a link back to your product (https, or loopback)")
    _json_flag(link)
