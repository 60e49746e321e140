"""RFC 9068 JWT access tokens through HTTP: issued, verified as a resource server would,
introspected and revoked through the same path as opaque tokens, and every forgery inactive."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from introspect import credentials, store
from introspect.cache import ANSWER
from introspect.metrics import METRICS
from introspect.service import Authority
from introspect.store import NewCredential, Selection
from tests.helpers import Registered, Server, register

AUDIENCE = "https://api.example.test"


async def served_keys(server: Server) -> dict[str, jwt.PyJWK]:
    """The JWK Set at /jwks.json, by kid, as a resource server would load it."""
    resp = await server.request("GET", "/jwks.json")
    assert resp.status == 200
    return {k["kid"]: jwt.PyJWK(k) for k in resp.json()["keys"]}


async def verify_served(server: Server, token: str, **kw: Any) -> dict[str, Any]:
    """Verify a JWT against the served JWK Set; the decoded header and payload."""
    header = jwt.get_unverified_header(token)
    key = (await served_keys(server))[header["kid"]]
    return jwt.decode_complete(token, key, algorithms=["ES256", "EdDSA"], **kw)


async def jwt_client(authority: Authority, **kw: Any) -> Registered:
    """A client registered for JWT access tokens, with one audience."""
    return await register(authority, audiences=(AUDIENCE,), token_format="jwt", **kw)


async def issue(server: Server, client: Registered, **form: str) -> str:
    """A new access token for `client`."""
    resp = await server.post_form(
        "/token", {"grant_type": "client_credentials", **form}, headers=client.auth
    )
    assert resp.status == 200, resp.body
    return resp.json()["access_token"]


async def introspect(server: Server, rs: Registered, token: str) -> dict[str, Any]:
    """The introspection answer for `token`, as `rs` sees it."""
    resp = await server.post_form("/introspect", {"token": token}, headers=rs.auth)
    assert resp.status == 200, resp.body
    return resp.json()


def b64(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def reassemble(header: dict[str, Any], payload: dict[str, Any], signature: bytes) -> str:
    """A compact JWS from its parts, for forgeries PyJWT refuses to make."""
    return ".".join([b64(orjson.dumps(header)), b64(orjson.dumps(payload)), b64(signature)])


async def test_jwt_token_verifies_against_served_jwks(server: Server, authority: Authority) -> None:
    """A JWT client's token is an RFC 9068 JWT that verifies with the served JWK Set."""
    client = await jwt_client(authority)
    resp = await server.post_form(
        "/token", {"grant_type": "client_credentials", "scope": "read"}, headers=client.auth
    )
    assert resp.status == 200
    body = resp.json()
    decoded = await verify_served(
        server, body["access_token"], audience=AUDIENCE, issuer="http://introspect.test"
    )
    header, claims = decoded["header"], decoded["payload"]
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    assert claims["sub"] == claims["client_id"] == client.client_id
    assert claims["aud"] == AUDIENCE
    assert claims["scope"] == "read"
    assert claims["exp"] - claims["iat"] == body["expires_in"] == 3600
    assert claims["jti"].startswith("tok_")


async def test_jwt_introspects_active_with_its_claims(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """A JWT introspects active with the same jti, sub, aud, scope and times it carries."""
    client = await jwt_client(authority)
    token = await issue(server, client)
    claims = jwt.decode(token, options={"verify_signature": False})
    answer = await introspect(server, resource_server, token)
    assert answer["active"] is True
    for name in ("jti", "sub", "client_id", "aud", "scope", "iat", "exp", "iss"):
        assert answer[name] == claims[name], name
    assert answer["kind"] == "access_token"


async def test_jwt_is_stored_by_hash_with_its_jti(server: Server, authority: Authority) -> None:
    """The issued JWT is a credentials row of format jwt, id = jti, hash = keyed hash."""
    client = await jwt_client(authority)
    token = await issue(server, client)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    row = await authority.pool.fetchrow("SELECT format, hash FROM credentials WHERE id = $1", jti)
    assert row["format"] == "jwt"
    assert bytes(row["hash"]) == credentials.keyed_hash(authority.server_secrets[0], token)


async def test_revoked_jwt_is_inactive_at_once(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """After /revoke of a JWT answers, it introspects exactly {"active": false}."""
    client = await jwt_client(authority)
    token = await issue(server, client)
    for _ in range(3):  # warm every cache layer
        assert (await introspect(server, resource_server, token))["active"]
    resp = await server.post_form("/revoke", {"token": token}, headers=client.auth)
    assert resp.status == 200
    assert await introspect(server, resource_server, token) == {"active": False}


async def test_jwt_revoked_by_jti_is_inactive(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """An admin revocation by jti makes a cached JWT inactive at once."""
    client = await jwt_client(authority)
    token = await issue(server, client)
    assert (await introspect(server, resource_server, token))["active"]
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    revoked = await authority.revoke("test", Selection(id=jti))
    assert revoked.count == 1
    assert await introspect(server, resource_server, token) == {"active": False}


async def test_jwt_of_another_client_is_not_revoked(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """Revoking another client's JWT answers 200 and changes nothing (RFC 7009)."""
    client = await jwt_client(authority)
    other = await register(authority)
    token = await issue(server, client)
    resp = await server.post_form("/revoke", {"token": token}, headers=other.auth)
    assert resp.status == 200
    assert (await introspect(server, resource_server, token))["active"]


async def test_opaque_and_jwt_clients_share_the_authority(
    server: Server, authority: Authority, app_client: Registered, resource_server: Registered
) -> None:
    """An opaque client keeps getting opaque tokens while a JWT client gets JWTs."""
    opaque = await issue(server, app_client)
    assert credentials.parse(opaque) is credentials.Kind.ACCESS_TOKEN
    token = await issue(server, await jwt_client(authority))
    assert token.count(".") == 2
    for presented in (opaque, token):
        assert (await introspect(server, resource_server, presented))["active"]


async def test_jwt_client_without_audience_is_invalid_target(
    server: Server, authority: Authority
) -> None:
    """A JWT client registered with no audience gets invalid_target, since aud is required."""
    client = await register(authority, token_format="jwt")
    resp = await server.post_form(
        "/token", {"grant_type": "client_credentials"}, headers=client.auth
    )
    assert resp.status == 400
    assert resp.json()["error"] == "invalid_target"


async def store_live(authority: Authority, client: Registered, token: str) -> None:
    """Store `token` as a live credential of `client`, so that only local verification
    can make it introspect inactive."""
    t = store.now()
    await store.insert_credential(
        authority.pool,
        NewCredential(
            id="tok_" + b64(os.urandom(12)),
            kind="access_token",
            hash=credentials.keyed_hash(authority.server_secrets[0], token),
            client_id=client.client_id,
            sub=client.client_id,
            scopes=("read",),
            audiences=(AUDIENCE,),
            iat=t,
            exp=t + 600,
            format="jwt",
        ),
    )


async def mint(
    authority: Authority, client: Registered, claims: dict[str, Any], **header: Any
) -> str:
    """A JWT signed by the server's own current key, with `claims` and `header` applied,
    stored as a live credential."""
    keyring = authority.keyring
    await keyring.ready()
    key, private = keyring.signer()
    t = store.now()
    payload = {
        "iss": authority.issuer,
        "sub": client.client_id,
        "aud": AUDIENCE,
        "iat": t,
        "nbf": t,
        "exp": t + 600,
        "jti": "tok_" + b64(os.urandom(12)),
        "client_id": client.client_id,
        "scope": "read",
        **claims,
    }
    token = jwt.encode(
        payload, private, algorithm=key.alg, headers={"typ": "at+jwt", "kid": key.kid, **header}
    )
    await store_live(authority, client, token)
    return token


async def test_minted_jwt_is_active(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """The control for the forgeries below: a well-formed minted JWT introspects active."""
    client = await jwt_client(authority)
    token = await mint(server.authority, client, {})
    assert (await introspect(server, resource_server, token))["active"]


async def test_expired_and_premature_jwts_are_inactive(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """A JWT past its exp, or before its nbf, is inactive even while its row is live."""
    client = await jwt_client(authority)
    t = store.now()
    for claims in ({"exp": t - 5}, {"nbf": t + 300}, {"iat": t + 300}):
        token = await mint(server.authority, client, claims)
        assert await introspect(server, resource_server, token) == {"active": False}, claims


async def test_wrong_issuer_jwt_is_inactive(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """A JWT signed by our key for another issuer is inactive."""
    client = await jwt_client(authority)
    token = await mint(server.authority, client, {"iss": "https://evil.example"})
    assert await introspect(server, resource_server, token) == {"active": False}


async def test_wrong_type_jwt_is_inactive(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """A JWT signed by our key without typ at+jwt (e.g. an ID token) is inactive."""
    client = await jwt_client(authority)
    token = await mint(server.authority, client, {}, typ="JWT")
    assert await introspect(server, resource_server, token) == {"active": False}


async def test_forged_jwts_are_inactive(
    server: Server, authority: Authority, resource_server: Registered
) -> None:
    """alg none, HS256 keyed with our public key, tampered and foreign-key JWTs are inactive,
    even when stored as live credentials."""
    client = await jwt_client(authority)
    token = await issue(server, client)
    head, body, sig = token.split(".")
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    served = (await server.request("GET", "/jwks.json")).json()["keys"]
    raw_jwk = next(k for k in served if k["kid"] == header["kid"])
    jwk = jwt.PyJWK(raw_jwk)
    public_pem = jwk.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = {**header, "alg": "HS256"}
    signing_input = f"{b64(orjson.dumps(hs_header))}.{b64(orjson.dumps(claims))}".encode()
    forgeries = {
        "none": reassemble({**header, "alg": "none"}, claims, b""),
        "HS256 with the PEM": signing_input.decode()
        + "."
        + b64(hmac.digest(public_pem, signing_input, hashlib.sha256)),
        "HS256 with the JWK": signing_input.decode()
        + "."
        + b64(hmac.digest(json.dumps(raw_jwk).encode(), signing_input, hashlib.sha256)),
        "tampered payload": f"{head}.{b64(orjson.dumps({**claims, 'scope': 'admin'}))}.{sig}",
        "tampered signature": f"{head}.{body}.{sig[:-4]}AAAA",
        "foreign key": jwt.encode(
            claims,
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"typ": "at+jwt", "kid": header["kid"]},
        ),
        "unknown kid": jwt.encode(
            claims,
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"typ": "at+jwt", "kid": "no-such-kid"},
        ),
    }
    for name, forged in forgeries.items():
        await store_live(authority, client, forged)
        assert await introspect(server, resource_server, forged) == {"active": False}, name
    assert (await introspect(server, resource_server, token))["active"]


async def test_oversized_and_malformed_jwts_cost_no_io(server: Server) -> None:
    """A JWT over 8 KiB, or one that does not parse, is inactive without Redis or Postgres."""
    authority = server.authority
    await authority.keyring.ready()
    pad = b64(b"x" * 7000)
    presented = [
        "eyJhbGciOiJFUzI1NiJ9." + pad + "." + pad,
        "a.b.c",
        "eyJhbGciOiJub25lIn0.e30.",
        "...",
        "x" * 600,
    ]
    before = (METRICS.pg_queries.value(), METRICS.redis_calls.value())
    for token in presented:
        entry = await authority.lookup(token)
        assert entry[ANSWER] is None
    assert (METRICS.pg_queries.value(), METRICS.redis_calls.value()) == before
