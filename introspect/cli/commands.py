"""The commands: each turns its arguments into the admin operation's input, runs it, prints."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from introspect import admin, runtime
from introspect.cli.output import cell, emit, emit_new_key, page_lines, record, revoked_lines
from introspect.config import Settings
from introspect.portal.sessions import mint_link
from introspect.service import Authority, open_authority

T = TypeVar("T")
ACTOR = "cli"


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


def page_query(args: argparse.Namespace, *filters: str) -> dict[str, str]:
    """The query of a list command: --limit, --cursor and the filters given."""
    query = {name: getattr(args, name) for name in ("limit", "cursor", *filters)}
    return {name: str(value) for name, value in query.items() if value is not None}


def listed(
    args: argparse.Namespace,
    settings: Settings,
    listing: Callable[[Authority, Mapping[str, str]], Awaitable[dict[str, Any]]],
    query: Mapping[str, str],
    columns: Sequence[str],
) -> int:
    """Run one admin listing with `query` and print its page under `columns`."""
    page = run_with_authority(settings, lambda a: listing(a, query))
    emit(args, page, page_lines(page, columns))
    return 0


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


def cmd_dev_cluster(args: argparse.Namespace, _settings: Settings) -> int:
    """introspect dev-cluster: form a 3+3 cluster, print how to use it, run until stopped."""
    from pathlib import Path

    from introspect.embedded.cluster import dev_cluster

    with dev_cluster(None if args.dir is None else Path(args.dir)) as cluster:
        print("INTROSPECT_REDIS_CLUSTER=true", flush=True)
        print(f"INTROSPECT_REDIS_URL={cluster.url}", flush=True)
        print("(Ctrl-C stops the cluster)", file=sys.stderr, flush=True)
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()
    return 0


def cmd_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    """introspect migrate."""
    from introspect.server import apply_migrations

    with runtime.stores(settings) as found:
        applied = asyncio.run(apply_migrations(found.database_url))
    print("applied: " + ", ".join(applied) if applied else "up to date")
    return 0


CLIENT_COLUMNS = ("client_id", "name", "scopes", "audiences", "can_introspect", "disabled")


def limits_body(args: argparse.Namespace) -> dict[str, Any]:
    """The rate limits and credits given on the command line, as the admin API takes them."""
    body: dict[str, Any] = {}
    if args.rate_limit is not None:
        body["rate_limits"] = args.rate_limit
    if getattr(args, "no_rate_limits", False):
        body["rate_limits"] = []
    if args.credits is not None:
        body["credits"] = {"remaining": args.credits, "refill": args.refill}
    elif args.refill is not None:
        raise SystemExit("introspect: --refill needs --credits")
    if getattr(args, "no_credits", False):
        body["credits"] = None
    return body


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
    return {**body, **limits_body(args)}


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
    return listed(args, settings, admin.list_clients, page_query(args), CLIENT_COLUMNS)


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
    body.update(limits_body(args))
    issued = run_with_authority(settings, lambda a: admin.create_api_key(a, ACTOR, body))
    emit_new_key(args, issued, "shown once")
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
    body.update(limits_body(args))
    key = run_with_authority(settings, lambda a: admin.update_api_key(a, ACTOR, args.id, body))
    emit(args, key, record(key))
    return 0


def cmd_portal_link(args: argparse.Namespace, settings: Settings) -> int:
    """introspect portal-link: a one-time link into the developer portal, as
    `POST /admin/portal-sessions` mints it."""
    body: dict[str, Any] = {"sub": args.sub, "scopes": scope_list(args.scope)}
    if args.client_id is not None:
        body["client_id"] = args.client_id
    if args.return_url is not None:
        body["return_url"] = args.return_url
    minted = run_with_authority(settings, lambda a: mint_link(a, ACTOR, body))
    until = cell("expires_at", minted["expires_at"])
    emit(args, minted, [minted["url"], f"(works once, until {until})"])
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
    emit_new_key(args, minted, "shown once; Authorization: Bearer")
    return 0


def cmd_admin_key_list(args: argparse.Namespace, settings: Settings) -> int:
    """introspect admin-key list."""
    return listed(args, settings, admin.list_admin_keys, page_query(args), ADMIN_KEY_COLUMNS)


def cmd_admin_key_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """introspect admin-key revoke."""
    revoked = run_with_authority(settings, lambda a: admin.revoke_admin_key(a, ACTOR, args.id))
    emit(args, revoked, [f"admin key {revoked['id']} revoked"])
    return 0


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
    return listed(args, settings, admin.list_tokens, query, KEY_COLUMNS)


AUDIT_COLUMNS = ("id", "at", "actor", "action", "target_id", "details")


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """introspect audit."""
    query = page_query(args, "action", "target_id", "actor")
    return listed(args, settings, admin.list_audit, query, AUDIT_COLUMNS)


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
