"""RFC 8417: Security Event Tokens (§2 claims, §2.2 the `events` claim, §2.3 `typ`).

The revocation feed (introspect/feed.py) delivers one SET per event: a JWT
signed with the server's published keys (the ones at `jwks_uri`), header
`typ: secevent+jwt` (§2.3), claims `iss`, `aud` (the receiving client's
client_id), `iat`, `jti` and `events`, an object holding exactly one event
type URI and its payload. Like RFC 8417 §2.2 asks, a SET has no `exp` and no
`sub` at top level, so it cannot pass for an access token; each payload names
the identifiers an introspection answer carries (`jti`, `client_id`, `sub`).
"""

from __future__ import annotations

from typing import Any

TYP = "secevent+jwt"
# How long after `iat` a receiver may still be verifying a SET: its signing key stays
# published at least that long (as for RFC 9701 answers).
VERIFY_WINDOW = 60

_BASE = "urn:introspect:secevent:"
# The event types, each with its payload (see the README's "Revocation feed").
CREDENTIAL_REVOKED = _BASE + "credential-revoked"  # {"jti"}
CREDENTIAL_CHANGED = _BASE + "credential-changed"  # {"jti"}
CLIENT_CREDENTIALS_REVOKED = _BASE + "client-credentials-revoked"  # {"client_id"}
SUBJECT_CREDENTIALS_REVOKED = _BASE + "subject-credentials-revoked"  # {"sub"}
CLIENT_DISABLED = _BASE + "client-disabled"  # {"client_id"}
CLIENT_ENABLED = _BASE + "client-enabled"  # {"client_id"}
# Not stored: told to a receiver whose position fell behind the retained events.
FEED_GAP = _BASE + "feed-gap"  # {"reason"}

EVENT_TYPES = (
    CREDENTIAL_REVOKED,
    CREDENTIAL_CHANGED,
    CLIENT_CREDENTIALS_REVOKED,
    SUBJECT_CREDENTIALS_REVOKED,
    CLIENT_DISABLED,
    CLIENT_ENABLED,
    FEED_GAP,
)


def set_claims(
    *, issuer: str, audience: str, iat: int, jti: str, event_type: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """The claims of a SET carrying one event to `audience` (§2.2)."""
    return {
        "iss": issuer,
        "aud": audience,
        "iat": iat,
        "jti": jti,
        "events": {event_type: payload},
    }
