"""RFC 7523 `private_key_jwt` client authentication at /token, /introspect and /revoke."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from introspect import store
from introspect.rfc7523 import ASSERTION_TYPE
from introspect.service import Authority
from tests.helpers import Registered, Server, register, start_server

ISSUER = "http://introspect.test"
KEY_MAKERS = {
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "PS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


class KeyClient:
    """A client registered with a JWK Set, holding the private key that signs its assertions."""

    def __init__(self, client: Registered, private: Any, alg: str, kid: str) -> None:
        self.client_id = client.client_id
        self.secret = client.secret
        self.private = private
        self.alg = alg
        self.kid = kid

    def assertion(self, **claims: Any) -> str:
        """A client assertion for the token endpoint; `claims` override or (None) drop claims."""
        t = store.now()
        payload = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": f"{ISSUER}/token",
            "iat": t,
            "exp": t + 60,
            "jti": secrets.token_urlsafe(16),
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.private, algorithm=self.alg, headers={"kid": self.kid})

    def form(self, assertion: str | None = None, **extra: str) -> dict[str, str]:
        """Form fields that authenticate with an assertion (a fresh one unless given)."""
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion or self.assertion(),
            **extra,
        }


def public_jwk(private: Any, alg: str, kid: str) -> dict[str, Any]:
    """The public JWK of `private` as a client would register it."""
    algorithm = jwt.get_algorithm_by_name(alg)
    return {**algorithm.to_jwk(private.public_key(), as_dict=True), "kid": kid}


async def key_client(authority: Authority, alg: str = "ES256", **kw: Any) -> KeyClient:
    """Register a client with a fresh key pair for `alg` in its JWK Set."""
    private = KEY_MAKERS[alg]()
    kid = secrets.token_hex(4)
    client = await register(authority, jwks={"keys": [public_jwk(private, alg, kid)]}, **kw)
    return KeyClient(client, private, alg, kid)


async def token(server: Server, form: dict[str, str], **kw: Any) -> Any:
    """POST /token with the client credentials grant and `form`."""
    return await server.post_form("/token", {"grant_type": "client_credentials", **form}, **kw)


def assert_invalid_client(resp: Any) -> None:
    """A 401 invalid_client answer with its WWW-Authenticate header."""
    assert resp.status == 401, resp.body
    assert resp.json()["error"] == "invalid_client"
    assert "WWW-Authenticate" in resp.headers


@pytest.mark.parametrize("alg", sorted(KEY_MAKERS))
async def test_assertion_gets_a_token(server: Server, authority: Authority, alg: str) -> None:
    """A client authenticates at /token with an assertion signed by each allowed algorithm."""
    kc = await key_client(authority, alg)
    resp = await token(server, kc.form())
    assert resp.status == 200, resp.body
    assert resp.json()["access_token"]


@pytest.mark.parametrize("aud", [ISSUER, f"{ISSUER}/introspect", [f"{ISSUER}/revoke", "x"]])
async def test_audience_may_be_issuer_or_endpoint(
    server: Server, authority: Authority, aud: Any
) -> None:
    """aud may name the issuer or any of our endpoint URLs."""
    kc = await key_client(authority)
    resp = await token(server, kc.form(kc.assertion(aud=aud)))
    assert resp.status == 200, resp.body


async def test_assertion_at_introspect_and_revoke(server: Server, authority: Authority) -> None:
    """A resource server introspects, and a client revokes, authenticating by assertion."""
    rs = await key_client(authority, "EdDSA", scopes=(), can_introspect=True)
    kc = await key_client(authority)
    access = (await token(server, kc.form())).json()["access_token"]
    resp = await server.post_form("/introspect", rs.form(token=access))
    assert resp.status == 200
    assert resp.json()["active"] is True
    resp = await server.post_form("/revoke", kc.form(kc.assertion(aud=ISSUER), token=access))
    assert resp.status == 200
    resp = await server.post_form("/introspect", rs.form(token=access))
    assert resp.json() == {"active": False}


async def test_replayed_assertion_is_refused(server: Server, authority: Authority) -> None:
    """An assertion used once is refused the second time."""
    kc = await key_client(authority)
    assertion = kc.assertion()
    assert (await token(server, kc.form(assertion))).status == 200
    assert_invalid_client(await token(server, kc.form(assertion)))


async def test_replay_on_another_worker_is_refused(
    server: Server, authority: Authority, settings: Any
) -> None:
    """A jti used on one worker is refused on another that shares the Redis."""
    kc = await key_client(authority)
    assertion = kc.assertion()
    assert (await token(server, kc.form(assertion))).status == 200
    other_server, other = await start_server(settings)
    try:
        assert_invalid_client(await token(other, kc.form(assertion)))
    finally:
        await other.http.close()
        await other_server.close()


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(lambda t: {"exp": t - 120, "iat": t - 180}, id="expired"),
        pytest.param(lambda t: {"exp": t + 7200}, id="valid-too-long"),
        pytest.param(lambda t: {"iat": None, "exp": t + 3700}, id="no-iat-valid-too-long"),
        pytest.param(lambda t: {"iat": t - 3700, "exp": t + 60}, id="issued-too-long-ago"),
        pytest.param(lambda t: {"iat": t + 600, "exp": t + 700}, id="issued-in-future"),
        pytest.param(lambda t: {"aud": "https://elsewhere.example/token"}, id="wrong-audience"),
        pytest.param(lambda t: {"aud": None}, id="no-audience"),
        pytest.param(lambda t: {"jti": None}, id="no-jti"),
        pytest.param(lambda t: {"exp": None}, id="no-exp"),
        pytest.param(lambda t: {"sub": "someone-else"}, id="sub-not-client"),
    ],
)
async def test_bad_claims_are_invalid_client(
    server: Server, authority: Authority, claims: Callable[[int], dict[str, Any]]
) -> None:
    """Expired, too long-lived, wrong-audience and incomplete assertions are refused."""
    kc = await key_client(authority)
    assertion = kc.assertion(**claims(store.now()))
    assert_invalid_client(await token(server, kc.form(assertion)))


async def test_unregistered_key_is_refused(server: Server, authority: Authority) -> None:
    """An assertion signed by a key outside the client's JWK Set is refused."""
    kc = await key_client(authority)
    kc.private = ec.generate_private_key(ec.SECP256R1())
    assert_invalid_client(await token(server, kc.form()))


async def test_unsigned_and_hmac_assertions_are_refused(
    server: Server, authority: Authority
) -> None:
    """alg none, and HS256 keyed with the client's public JWK, are refused."""
    kc = await key_client(authority)
    good = kc.assertion()
    head, body, _ = good.split(".")
    header = jwt.get_unverified_header(good)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    none = f"{b64(orjson.dumps({**header, 'alg': 'none'}))}.{body}."
    hs_head = b64(orjson.dumps({**header, "alg": "HS256"}))
    jwk = orjson.dumps(public_jwk(kc.private, kc.alg, kc.kid))
    mac = hmac.digest(jwk, f"{hs_head}.{body}".encode(), hashlib.sha256)
    for forged in (none, f"{hs_head}.{body}.{b64(mac)}", f"{head}.{body}.AAAA"):
        assert_invalid_client(await token(server, kc.form(forged)))


async def test_client_without_jwks_is_refused(
    server: Server, authority: Authority, app_client: Registered
) -> None:
    """A client registered without a JWK Set cannot use private_key_jwt."""
    kc = await key_client(authority)
    stranger = KeyClient(app_client, kc.private, kc.alg, kc.kid)
    assert_invalid_client(await token(server, stranger.form()))


async def test_two_methods_are_invalid_request(server: Server, authority: Authority) -> None:
    """An assertion together with Basic or client_secret is 400 invalid_request."""
    kc = await key_client(authority)
    basic = base64.b64encode(f"{kc.client_id}:{kc.secret}".encode()).decode()
    resp = await token(server, kc.form(), headers={"Authorization": f"Basic {basic}"})
    assert resp.status == 400
    assert resp.json()["error"] == "invalid_request"
    resp = await token(server, kc.form(client_secret=kc.secret, client_id=kc.client_id))
    assert resp.status == 400
    assert resp.json()["error"] == "invalid_request"


async def test_wrong_assertion_type_and_client_id_are_refused(
    server: Server, authority: Authority
) -> None:
    """Another client_assertion_type, or a client_id naming someone else, is invalid_client."""
    kc = await key_client(authority)
    form = {**kc.form(), "client_assertion_type": "urn:example:other"}
    assert_invalid_client(await token(server, form))
    assert_invalid_client(await token(server, kc.form(client_id="client_someoneelse")))


async def test_garbage_assertions_are_invalid_client(server: Server, authority: Authority) -> None:
    """Assertions that are not JWTs, or far too long, are invalid_client, never a 500."""
    kc = await key_client(authority)
    for garbage in ("x", "a.b.c", "...", "e30.e30.", "eyJhbGciOiJFUzI1NiJ9." + "A" * 9000 + ".x"):
        assert_invalid_client(await token(server, kc.form(garbage)))
