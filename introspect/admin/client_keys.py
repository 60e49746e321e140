"""Service clients' access keys: Ed25519 key pairs whose public halves join the client's jwks."""

from __future__ import annotations

from typing import Any

import asyncpg

from introspect import access_keys, jwks
from introspect.admin import validation
from introspect.admin.clients import changed_client, locked_client
from introspect.cache import Invalidation
from introspect.errors import Conflict, NotFound
from introspect.service import Authority, new_id
from introspect.store import Client


def _listed_keys(client: Client) -> list[Any]:
    """The keys of a client's jwks (none without one)."""
    listed = (client.jwks or {}).get("keys", [])
    if not isinstance(listed, list):
        raise Conflict("the client's jwks holds no array of keys: replace it first")
    return listed


async def create_access_key(
    authority: Authority, actor: str, client_id: str, body: object
) -> dict[str, Any]:
    """A new Ed25519 key pair for a client: the public key joins its jwks under a new kid.

    Answers {kid, access_key}: the access key (see `introspect.access_keys`)
    holds the private key, shown once and never stored. A disabled client,
    or one whose jwks holds `jwks.MAX_KEYS` keys already, is a `Conflict`.
    """
    validation.fields(body, ())
    key = access_keys.generate(validation.known_id(client_id, "client", "client"), new_id("ak"))

    async def apply(conn: asyncpg.Connection) -> tuple[Client, Invalidation]:
        client = await locked_client(conn, client_id)
        if client.disabled:
            raise Conflict("the client is disabled")
        listed = _listed_keys(client)
        if len(listed) >= jwks.MAX_KEYS:
            raise Conflict(f"the client's jwks holds {jwks.MAX_KEYS} keys already: delete one")
        key_set = {**(client.jwks or {}), "keys": [*listed, key.public_jwk()]}
        try:
            jwks.validate(key_set)
        except jwks.InvalidKeySet as exc:
            raise Conflict(f"the client's jwks takes no more keys until fixed ({exc})") from None
        details = {"access_key_created": key.kid}
        return await changed_client(conn, actor, client_id, {"jwks": key_set}, details)

    await authority.change(apply)
    return {"kid": key.kid, "access_key": key.encode()}


async def delete_access_key(authority: Authority, actor: str, client_id: str, kid: str) -> None:
    """Remove the key `kid` from a client's jwks: assertions it signs fail at once everywhere.

    Removing the last key leaves the client with no jwks.
    """

    async def apply(conn: asyncpg.Connection) -> tuple[Client, Invalidation]:
        client = await locked_client(conn, client_id)
        listed = _listed_keys(client)
        kept = [k for k in listed if not (isinstance(k, dict) and k.get("kid") == kid)]
        if len(kept) == len(listed):
            raise NotFound("key")
        key_set = {**(client.jwks or {}), "keys": kept} if kept else None
        details = {"access_key_deleted": kid}
        return await changed_client(conn, actor, client_id, {"jwks": key_set}, details)

    await authority.change(apply)
