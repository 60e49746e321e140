"""Signing keys: the JWK Set at `jwks_uri` (RFC 7517 §5) and the keys behind RFC 9068
access tokens and RFC 9701 introspection answers.

The life of a key
-----------------
* **Stored encrypted.** A key (ES256 on P-256 by default, or EdDSA on
  Ed25519) is generated here and stored in Postgres (`signing_keys`, see
  `introspect/sql/0003_signing_keys.sql`); its PKCS#8 private part is sealed with
  AES-256-GCM under a key derived from the server secret by HKDF-SHA256, the
  kid as associated data. Every configured server secret is tried when
  unsealing, so rotating `INTROSPECT_SECRET` keeps existing keys usable.
* **Published first, signer later.** `rotate` publishes a new key at once
  and makes it the signer only at `activates_at = now + propagation delay`
  (`DEFAULT_PROPAGATION_DELAY`, 600 s). Every worker reloads its keyring at
  least every `REFRESH` seconds and `/jwks.json` may be cached for
  `JWKS_MAX_AGE` seconds; the default delay exceeds their sum, so a resource
  server caching the JWK Set holds a key before any token signed by it. The
  signer is the newest key whose `activates_at` has come.
* **Retired when nothing it signed can still be live.** Before a key signs
  anything expiring at E, its `signed_until` is raised to at least E (in
  leases of `LEASE` seconds, so one write per lease, not per token) by a
  statement that matches only an unretired key. A key superseded by an active
  newer key and whose `signed_until` has passed is retired (no longer
  published, its private part erased) by the statement that loads the
  keyring. Postgres row locks order the two, so no key signs after its
  retirement and no retired key has a live token.
* **The first key** is created on first use when no key is active, under a
  transaction-scoped advisory lock: several workers starting at once create
  one key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import jwt
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from introspect import store
from introspect.metrics import METRICS
from introspect.store import NewSigningKey, StoredSigningKey

log = logging.getLogger(__name__)

ALGORITHMS = ("ES256", "EdDSA")
DEFAULT_ALG = "ES256"
DEFAULT_PROPAGATION_DELAY = 600
JWKS_MAX_AGE = 300
REFRESH = 30.0
# A kid this worker does not know may be a key another worker just made the signer.
UNKNOWN_KID_RELOAD = 1.0
LEASE = 300
_HKDF_INFO = b"introspect signing-key encryption v1"
_NONCE = 12
_STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class KeyringError(Exception):
    """No key can sign: none active is readable with the configured server secrets."""


def _aead(secret: bytes) -> AESGCM:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
    return AESGCM(kdf.derive(secret))


def seal(secret: bytes, kid: str, private: PrivateKey) -> bytes:
    """The stored form of a private key: a nonce, then AES-GCM of its PKCS#8 DER."""
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    nonce = os.urandom(_NONCE)
    return nonce + _aead(secret).encrypt(nonce, der, kid.encode())


def unseal(secrets_: tuple[bytes, ...], kid: str, sealed: bytes) -> PrivateKey | None:
    """The private key sealed under any of the server secrets, or None when none opens it."""
    nonce, box = sealed[:_NONCE], sealed[_NONCE:]
    for secret in secrets_:
        try:
            der = _aead(secret).decrypt(nonce, box, kid.encode())
        except InvalidTag:
            continue
        key = serialization.load_der_private_key(der, password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            return key
    return None


def generate(alg: str) -> PrivateKey:
    """A new private key for `alg` (ES256: P-256; EdDSA: Ed25519)."""
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported signing algorithm {alg!r}; use one of {', '.join(ALGORITHMS)}")


def public_jwk(private: PrivateKey, kid: str, alg: str) -> dict[str, Any]:
    """The public JWK (RFC 7517 §4) of a key, as published."""
    if isinstance(private, ec.EllipticCurvePrivateKey):
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One published key: its JWK, its verifier, and its private part when readable."""

    kid: str
    alg: str
    seq: int
    activates_at: int
    jwk: dict[str, Any]
    verifier: jwt.PyJWK
    private: PrivateKey | None = field(repr=False)


def _new_key(secret: bytes, alg: str) -> NewSigningKey:
    """A new key for `alg`: its kid, its public JWK (JSON text) and its sealed private part."""
    private = generate(alg)
    kid = secrets.token_urlsafe(12)
    jwk = orjson.dumps(public_jwk(private, kid, alg)).decode()
    return NewSigningKey(kid=kid, alg=alg, public_jwk=jwk, sealed=seal(secret, kid, private))


class Keyring:
    """This worker's copy of the published keys: verifies, signs, serves the JWK Set."""

    def __init__(self, pool: asyncpg.Pool, server_secrets: tuple[bytes, ...]) -> None:
        self.pool = pool
        self.secrets = server_secrets
        self._keys: dict[str, SigningKey] = {}
        self._order: list[SigningKey] = []
        self._signed_until: dict[str, int] = {}
        self._jwks = orjson.dumps({"keys": []})
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    # --- reading -----------------------------------------------------------------------------

    async def ready(self) -> None:
        """Load the keys when never loaded or older than REFRESH; one load at a time."""
        if time.monotonic() - self._loaded_at < REFRESH:
            return
        if self._keys and self._lock.locked():
            return  # a reload is under way; the keys in hand serve meanwhile
        await self.refresh(min_age=REFRESH)

    async def refresh(self, min_age: float = 0.0) -> None:
        """Reload from Postgres unless loaded less than `min_age` seconds ago.

        Creates the first key when none is active. When Postgres cannot be
        reached, keys already loaded keep serving and a reload is tried again
        a second later.
        """
        async with self._lock:
            if time.monotonic() - self._loaded_at < min_age:
                return
            try:
                rows = await self._load()
                if not any(r.activates_at <= store.now() for r in rows):
                    await self._create_first()
                    rows = await self._load()
            except _STORE_ERRORS as exc:
                if not self._keys:
                    raise
                log.warning("signing keys not reloaded: %s", type(exc).__name__)
                self._loaded_at = time.monotonic() - REFRESH + UNKNOWN_KID_RELOAD
                return
            self._install(rows)

    async def _load(self) -> list[StoredSigningKey]:
        METRICS.pg_queries.inc()
        return await store.load_signing_keys(self.pool, store.now())

    async def _create_first(self) -> None:
        key = _new_key(self.secrets[0], DEFAULT_ALG)
        if await store.insert_first_signing_key(self.pool, key, store.now()):
            log.info("created the first signing key %s", key.kid)

    def _install(self, rows: list[StoredSigningKey]) -> None:
        keys: dict[str, SigningKey] = {}
        signed_until: dict[str, int] = {}
        for row in rows:
            kid = row.kid
            key = self._keys.get(kid)
            if key is None:
                jwk = orjson.loads(row.public_jwk)
                private = unseal(self.secrets, kid, row.private_key)
                if private is None:
                    log.warning("signing key %s cannot be read with the server secrets", kid)
                key = SigningKey(
                    kid=kid,
                    alg=row.alg,
                    seq=row.seq,
                    activates_at=row.activates_at,
                    jwk=jwk,
                    verifier=jwt.PyJWK(jwk, algorithm=row.alg),
                    private=private,
                )
            elif key.activates_at != row.activates_at:
                # An operator moved the activation (e.g. to make a published key sign now).
                key = replace(key, activates_at=row.activates_at)
            keys[kid] = key
            signed_until[kid] = max(self._signed_until.get(kid, 0), row.signed_until)
        self._keys = keys
        self._signed_until = signed_until
        self._order = list(keys.values())
        self._jwks = orjson.dumps({"keys": [k.jwk for k in self._order]})
        self._loaded_at = time.monotonic()

    async def jwks(self) -> bytes:
        """The JWK Set document (RFC 7517 §5) of every published key, serialized."""
        await self.ready()
        return self._jwks

    async def verification_key(self, kid: str) -> SigningKey | None:
        """The published key `kid`, reloading (at most once a second) when it is unknown."""
        await self.ready()
        key = self._keys.get(kid)
        if key is None:
            await self.refresh(min_age=UNKNOWN_KID_RELOAD)
            key = self._keys.get(kid)
        return key

    # --- signing -----------------------------------------------------------------------------

    def signer(self) -> tuple[SigningKey, PrivateKey]:
        """The key that signs now, the newest active one whose private part is readable."""
        t = store.now()
        found = None
        for key in self._order:
            if key.activates_at > t:
                break
            if key.private is not None:
                found = key, key.private
        if found is None:
            raise KeyringError("no active signing key is readable with the server secrets")
        return found

    async def sign(self, payload: dict[str, Any], typ: str, valid_until: int) -> str:
        """A JWS over `payload` by the current signer, which stays published past `valid_until`."""
        await self.ready()
        for _ in range(2):
            key, private = self.signer()
            if await self._lease(key.kid, valid_until):
                return jwt.encode(
                    payload, private, algorithm=key.alg, headers={"typ": typ, "kid": key.kid}
                )
            # Retired under us: another worker made a newer key the signer long ago.
            await self.refresh()
        raise KeyringError("the signing key was retired while in use")

    async def _lease(self, kid: str, valid_until: int) -> bool:
        if self._signed_until.get(kid, 0) >= valid_until:
            return True
        METRICS.pg_queries.inc()
        until = await store.lease_signing_key(self.pool, kid, valid_until + LEASE)
        if until is None:
            return False
        self._signed_until[kid] = max(self._signed_until.get(kid, 0), until)
        return True

    # --- rotation ----------------------------------------------------------------------------

    async def rotate(
        self, alg: str = DEFAULT_ALG, propagation_delay: int = DEFAULT_PROPAGATION_DELAY
    ) -> SigningKey:
        """Publish a new key now; it becomes the signer `propagation_delay` seconds later."""
        await self.ready()
        METRICS.pg_queries.inc()
        key = _new_key(self.secrets[0], alg)
        t = store.now()
        await store.insert_signing_key(
            self.pool, key, created_at=t, activates_at=t + propagation_delay
        )
        await self.refresh()
        return self._keys[key.kid]
