"""How the SDK authenticates as its client at introspect's endpoints: RFC 6749 §2.3.1
`client_secret_basic`, or RFC 7523 `private_key_jwt` with a private key of its own or the
access key string of `POST /admin/clients/{id}/access-keys` (`introspect_sdk.access_keys`)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from introspect_sdk import access_keys

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True, slots=True, repr=False)
class ClientAuth:
    """A client's credentials; `apply` gives what a request to an endpoint carries."""

    client_id: str
    secret: str | None = None
    private_key: Any = None
    algorithm: str | None = None
    kid: str | None = None

    def __post_init__(self) -> None:
        if (self.secret is None) == (self.private_key is None or self.algorithm is None):
            raise ValueError("a client authenticates with a secret or a private key and algorithm")

    def __repr__(self) -> str:
        """The client id and the method, never a secret or a key."""
        return f"ClientAuth(client_id={self.client_id!r}, method={self.method!r})"

    @classmethod
    def with_secret(cls, client_id: str, secret: str) -> ClientAuth:
        """`client_secret_basic`."""
        return cls(client_id, secret=secret)

    @classmethod
    def with_private_key(
        cls, client_id: str, private_key: Any, algorithm: str, kid: str | None = None
    ) -> ClientAuth:
        """`private_key_jwt` with a key PyJWT signs `algorithm` with (ES256, EdDSA, RS256,
        PS256), registered in the client's jwks under `kid`."""
        return cls(client_id, private_key=private_key, algorithm=algorithm, kid=kid)

    @classmethod
    def with_access_key(cls, text: str) -> ClientAuth:
        """`private_key_jwt` from an access key string (`MalformedAccessKey` if it is none)."""
        key = access_keys.parse(text)
        return cls(
            key.client_id, private_key=key.private, algorithm=access_keys.ALGORITHM, kid=key.kid
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ClientAuth:
        """From `INTROSPECT_ACCESS_KEY`, or `INTROSPECT_CLIENT_ID` and `INTROSPECT_CLIENT_SECRET`
        (`KeyError` naming what is missing)."""
        if env.get("INTROSPECT_ACCESS_KEY"):
            return cls.with_access_key(env["INTROSPECT_ACCESS_KEY"])
        for name in ("INTROSPECT_CLIENT_ID", "INTROSPECT_CLIENT_SECRET"):
            if not env.get(name):
                raise KeyError(f"set INTROSPECT_ACCESS_KEY, or {name} and its companion")
        return cls.with_secret(env["INTROSPECT_CLIENT_ID"], env["INTROSPECT_CLIENT_SECRET"])

    @property
    def method(self) -> str:
        """The RFC 7591 name of the method."""
        return "client_secret_basic" if self.secret is not None else "private_key_jwt"

    def apply(self, audience: str) -> tuple[dict[str, str], dict[str, str]]:
        """Headers and form fields authenticating one request; `audience` names the server
        (its issuer) for the assertion, which is fresh on every call (its `jti` is single-use)."""
        if self.secret is not None:
            pair = f"{quote(self.client_id, safe='')}:{quote(self.secret, safe='')}"
            return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}, {}
        assert self.algorithm is not None  # every constructor but with_secret sets it
        assertion = access_keys.sign_assertion(
            self.client_id, self.private_key, self.algorithm, self.kid, audience
        )
        return {}, {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
