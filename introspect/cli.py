"""The `introspect` command line: parse, call the same services as the API, print.

Every admin command works on the configured database directly (so the first
admin key can be minted before any server runs) through the same
`introspect.admin` operations as the HTTP API, with the same validation, the
same audit entries (actor `cli`) and the same invalidations. `--json` prints
one JSON object on stdout and nothing else there; otherwise a readable table
or a few lines. Failures exit non-zero with a one-line error on stderr; logs
go to stderr too, at WARNING, except for `serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import orjson
from redis.exceptions import ConnectionError as RedisConnectionError

from introspect import admin, logs, rfc6749, runtime, signing
from introspect.config import ConfigError, Settings, load_settings
from introspect.embedded import EmbeddedError
from introspect.errors import AdminError
from introspect.portal.cli import add_portal_parser
from introspect.service import Authority, open_authority

T = TypeVar("T")
ACTOR = "cli"
TIME_COLUMNS = frozenset(
    {"at", "created_at", "iat", "nbf", "exp", "expires_at", "revoked_at", "last_used_at"}
)


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


# --- output --------------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: dict[str, Any], lines: Sequence[str]) -> None:
    """Print `data` as one JSON object with --json, else the human lines."""
    if getattr(args, "json", False):
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
    else:
        for line in lines:
            print(line)


def cell(column: str, value: object) -> str:
    """A value as a table shows it: times in UTC, lists space-separated, null as `-`."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if column in TIME_COLUMNS and isinstance(value, int):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def table(items: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """Aligned rows under a header."""
    rows = [list(columns)] + [[cell(c, item.get(c)) for c in columns] for item in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def record(data: dict[str, Any]) -> list[str]:
    """One object as `field: value` lines."""
    width = max(len(k) for k in data)
    return [f"{k + ':':<{width + 1}} {cell(k, v)}" for k, v in data.items()]


def page_lines(page: dict[str, Any], columns: Sequence[str]) -> list[str]:
    """A page as a table, and how to ask for the next one."""
    lines = table(page["items"], columns)
    if page["next_cursor"] is not None:
        lines.append(f"(more: --cursor {page['next_cursor']})")
    return lines


def revoked_lines(answer: dict[str, Any]) -> list[str]:
    """The outcome of a revocation, for people."""
    lines = [
        f"revoked {answer['revoked']} credential(s);"
        f" {answer['listeners']} server worker(s) acknowledged"
    ]
    if answer.get("invalidation") == "pending":
        lines.append("invalidation pending: Redis is unreachable; workers replay it on reconnect")
    return lines


def page_query(args: argparse.Namespace, *filters: str) -> dict[str, str]:
    """The query of a list command: --limit, --cursor and the filters given."""
    query = {name: getattr(args, name) for name in ("limit", "cursor", *filters)}
    return {name: str(value) for name, value in query.items() if value is not None}


def json_option(raw: str | None, option: str) -> Any:
    """The value of an option that takes JSON."""
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CommandError(f"{option} is not valid JSON") from None


def scope_list(raw: str) -> list[str]:
    """A space-separated --scope value as a list."""
    return raw.split()


# --- serve and migrate ---------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """introspect serve."""
    from introspect.server import serve

    settings = settings.with_listen(args.host, args.port)
    if args.admin_port is not None:
        settings = dataclasses.replace(settings, admin_port=args.admin_port)
    if settings.admin_port is not None and settings.admin_port == settings.port:
        raise CommandError("the admin port must differ from the main port")
    workers = args.workers or len(os.sched_getaffinity(0))
    return serve(settings, workers=workers, run_migrations=not args.no_migrate)


def cmd_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    """introspect migrate."""
    from introspect.server import apply_migrations

    with runtime.stores(settings) as found:
        applied = asyncio.run(apply_migrations(found.database_url))
    print("applied: " + ", ".join(applied) if applied else "up to date")
    return 0


# --- clients -------------------------------------------------------------------------------

CLIENT_COLUMNS = ("client_id", "name", "scopes", "audiences", "can_introspect", "disabled")


def client_body(args: argparse.Namespace) -> dict[str, Any]:
    """The client fields given on the command line, as the admin API takes them."""
    body: dict[str, Any] = {}
    if args.name is not None:
        body["name"] = args.name
    if args.scope is not None:
        body["scopes"] = scope_list(args.scope)
    if args.audience is not None:
        body["audiences"] = args.audience
    if args.introspect is not None:
        body["can_introspect"] = args.introspect
    if args.token_ttl is not None:
        body["token_ttl"] = args.token_ttl
    if args.token_format is not None:
        body["token_format"] = args.token_format
    if args.jwks is not None:
        body["jwks"] = json_option(args.jwks, "--jwks")
    if args.auth_method is not None:
        body["token_endpoint_auth_method"] = args.auth_method
    return body


def cmd_client_create(args: argparse.Namespace, settings: Settings) -> int:
    """introspect client create (a private_key_jwt client gets no secret)."""
    body = client_body(args)
    created = run_with_authority(settings, lambda a: admin.create_client(a, ACTOR, body))
    shown = {k: v for k, v in created.items() if k in ("client_id", "client_secret")}
    lines = [f"client_id:     {created['client_id']}"]
    if "client_secret" in created:
        lines.append(f"client_secret: {created['client_secret']}  (shown once)")
    emit(args, shown, lines)
    return 0


def cmd_client_list(args: argparse.Namespace, settings: Settings) -> int:
    """introspect client list."""
    page = run_with_authority(settings, lambda a: admin.list_clients(a, page_query(args)))
    emit(args, page, page_lines(page, CLIENT_COLUMNS))
    return 0


def cmd_client_show(args: argparse.Namespace, settings: Settings) -> int:
    """introspect client show."""
    client = run_with_authority(settings, lambda a: admin.read_client(a, args.client_id))
    emit(args, client, record(client))
    return 0


def cmd_client_update(args: argparse.Namespace, settings: Settings) -> int:
    """introspect client update."""
    body = client_body(args)
    if args.no_audiences:
        body["audiences"] = []
    if args.disabled is not None:
        body["disabled"] = args.disabled
    client = run_with_authority(
        settings, lambda a: admin.update_client(a, ACTOR, args.client_id, body)
    )
    emit(args, client, record(client))
    return 0


def cmd_client_delete(args: argparse.Namespace, settings: Settings) -> int:
    """introspect client delete."""
    revoked = run_with_authority(settings, lambda a: admin.delete_client(a, ACTOR, args.client_id))
    answer = {"client_id": args.client_id, **admin.revoked_answer(revoked)}
    emit(args, answer, [f"client {args.client_id} deleted (disabled)", *revoked_lines(answer)])
    return 0


def cmd_client_rotate_secret(args: argparse.Namespace, settings: Settings) -> int:
    """introspect client rotate-secret."""
    body = {"grace_period": args.grace_period}
    rotated = run_with_authority(
        settings, lambda a: admin.rotate_client_secret(a, ACTOR, args.client_id, body)
    )
    emit(
        args,
        rotated,
        [
            f"client_secret: {rotated['client_secret']}  (shown once)",
            f"the previous secret keeps working for {rotated['grace_period']} s",
        ],
    )
    return 0


def cmd_access_key_create(args: argparse.Namespace, settings: Settings) -> int:
    """introspect client access-key create."""
    created = run_with_authority(
        settings, lambda a: admin.create_access_key(a, ACTOR, args.client_id, {})
    )
    emit(
        args,
        created,
        [f"kid:        {created['kid']}", f"access_key: {created['access_key']}  (shown once)"],
    )
    return 0


def cmd_access_key_delete(args: argparse.Namespace, settings: Settings) -> int:
    """introspect client access-key delete."""
    run_with_authority(
        settings, lambda a: admin.delete_access_key(a, ACTOR, args.client_id, args.kid)
    )
    emit(
        args,
        {"client_id": args.client_id, "kid": args.kid},
        [f"key {args.kid} removed from client {args.client_id}"],
    )
    return 0


# --- API keys, admin keys ------------------------------------------------------------------

KEY_COLUMNS = ("id", "kind", "client_id", "sub", "scopes", "exp", "revoked_at", "active")


def cmd_api_key_create(args: argparse.Namespace, settings: Settings) -> int:
    """introspect api-key create."""
    body: dict[str, Any] = {"scopes": scope_list(args.scope)}
    for field, value in (
        ("client_id", args.client_id),
        ("sub", args.sub),
        ("audiences", args.audience),
        ("expires_in", args.expires_in),
        ("metadata", json_option(args.metadata, "--metadata")),
        ("name", args.name),
    ):
        if value is not None:
            body[field] = value
    issued = run_with_authority(settings, lambda a: admin.create_api_key(a, ACTOR, body))
    emit(
        args,
        {"id": issued["id"], "key": issued["key"]},
        [f"id:  {issued['id']}", f"key: {issued['key']}  (shown once)"],
    )
    return 0


def cmd_api_key_update(args: argparse.Namespace, settings: Settings) -> int:
    """introspect api-key update."""
    body: dict[str, Any] = {}
    if args.scope is not None:
        body["scopes"] = scope_list(args.scope)
    if args.audience is not None:
        body["audiences"] = args.audience
    if args.no_audiences:
        body["audiences"] = []
    if args.expires_in is not None:
        body["expires_in"] = args.expires_in
    if args.expires_at is not None:
        body["expires_at"] = args.expires_at
    if args.never_expires:
        body["expires_at"] = None
    if args.metadata is not None:
        body["metadata"] = json_option(args.metadata, "--metadata")
    if args.no_metadata:
        body["metadata"] = None
    if args.name is not None:
        body["name"] = args.name
    key = run_with_authority(settings, lambda a: admin.update_api_key(a, ACTOR, args.id, body))
    emit(args, key, record(key))
    return 0


def cmd_api_key_rotate(args: argparse.Namespace, settings: Settings) -> int:
    """introspect api-key rotate."""
    body = {"grace_period": args.grace_period}
    rotated = run_with_authority(settings, lambda a: admin.rotate_api_key(a, ACTOR, args.id, body))
    replaced = rotated["replaced"]
    emit(
        args,
        rotated,
        [
            f"id:  {rotated['id']}",
            f"key: {rotated['key']}  (shown once)",
            f"{replaced['id']} expires at {cell('exp', replaced['exp'])}",
        ],
    )
    return 0


ADMIN_KEY_COLUMNS = ("id", "name", "role", "created_at", "expires_at", "last_used_at", "active")


def cmd_admin_key_create(args: argparse.Namespace, settings: Settings) -> int:
    """introspect admin-key create."""
    body: dict[str, Any] = {"name": args.name, "role": args.role}
    if args.expires_in is not None:
        body["expires_in"] = args.expires_in
    minted = run_with_authority(settings, lambda a: admin.create_admin_key(a, ACTOR, body))
    emit(
        args,
        {"id": minted["id"], "key": minted["key"]},
        [f"id:  {minted['id']}", f"key: {minted['key']}  (shown once; Authorization: Bearer)"],
    )
    return 0


def cmd_admin_key_list(args: argparse.Namespace, settings: Settings) -> int:
    """introspect admin-key list."""
    page = run_with_authority(settings, lambda a: admin.list_admin_keys(a, page_query(args)))
    emit(args, page, page_lines(page, ADMIN_KEY_COLUMNS))
    return 0


def cmd_admin_key_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """introspect admin-key revoke."""
    revoked = run_with_authority(settings, lambda a: admin.revoke_admin_key(a, ACTOR, args.id))
    emit(args, revoked, [f"admin key {revoked['id']} revoked"])
    return 0


# --- revocation, listings ------------------------------------------------------------------


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """introspect revoke."""
    selector = next(s for s in admin.SELECTORS if getattr(args, s) is not None)
    value = getattr(args, selector)
    if selector == "token" and value == "-":
        value = sys.stdin.readline().strip()
    elif selector == "token":
        print(
            "warning: a token on the command line shows in the process list;"
            " use --token - and give it on stdin",
            file=sys.stderr,
        )
    body = {selector: value}
    revoked = run_with_authority(settings, lambda a: admin.revoke(a, ACTOR, body))
    answer = admin.revoked_answer(revoked)
    emit(args, answer, revoked_lines(answer))
    return 0


def cmd_tokens(args: argparse.Namespace, settings: Settings) -> int:
    """introspect tokens."""
    query = page_query(args, "client_id", "sub", "kind")
    if args.active is not None:
        query["active"] = "true" if args.active else "false"
    page = run_with_authority(settings, lambda a: admin.list_tokens(a, query))
    emit(args, page, page_lines(page, KEY_COLUMNS))
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """introspect audit."""
    query = page_query(args, "action", "target_id", "actor")
    page = run_with_authority(settings, lambda a: admin.list_audit(a, query))
    emit(args, page, page_lines(page, ("id", "at", "actor", "action", "target_id", "details")))
    return 0


# --- signing keys --------------------------------------------------------------------------


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    """introspect keys rotate: publish a new signing key, the signer after the delay."""
    if args.propagation_delay < 0:
        raise CommandError("--propagation-delay must be at least 0")
    key = run_with_authority(settings, lambda a: a.keyring.rotate(args.alg, args.propagation_delay))
    emit(
        args,
        {"kid": key.kid, "alg": key.alg, "activates_at": key.activates_at},
        [f"kid: {key.kid} ({key.alg}), published now, signs from {key.activates_at} (epoch s)"],
    )
    return 0


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


# --- the parser ----------------------------------------------------------------------------


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
    top = argparse.ArgumentParser(prog="introspect", description=__doc__.splitlines()[0])
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
    kcreate.add_argument("--name", help="a name to tell the key by (at most 100 characters)")
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
    kupdate.add_argument("--name", help="rename the key")
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
    add_portal_parser(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `introspect` console script."""
    args = parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
