"""RFC 8936: poll-based SET delivery over HTTP (§2.4 the poll request, §2.5 acknowledgement).

The request is a JSON object (§2.4): `maxEvents` (how many SETs at most; 0
only acknowledges), `returnImmediately` (false: a long poll), `ack` (the
`jti`s of SETs received and processed) and `setErrs` (`jti` -> `{"err",
"description"}`, SETs received but not processed: acknowledged too, as §2.4.3
has it, and never sent again). The answer is `{"sets": {jti: SET},
"moreAvailable": bool}` (§2.5).

Beside these, and outside RFC 8936, the body may carry the client
authentication parameters of RFC 6749 §2.3.1 and RFC 7523 (`client_id`,
`client_secret`, `client_assertion`, `client_assertion_type`), since a JSON
body has no form to carry them, and `receiver`: a name the caller picks for
its own position (several processes of one resource server, each with a
name, each get every event; the same name shares one position). All parsing
is here, without aiohttp; any malformed member is `invalid_request` naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from introspect.errors import InvalidRequest

MEDIA_TYPE = "application/json"
# maxEvents above this is served as this (§2.4: the transmitter may send fewer).
MAX_EVENTS = 256
DEFAULT_MAX_EVENTS = 100
# At most this many `ack` and `setErrs` entries per request, each jti at most MAX_JTI long.
MAX_ACKS = 1000
MAX_JTI = 256
# The body members the client authentication may use (RFC 6749 §2.3.1, RFC 7523 §2.2).
AUTH_MEMBERS = ("client_id", "client_secret", "client_assertion", "client_assertion_type")
_RECEIVER = re.compile(r"[A-Za-z0-9._~-]{1,64}")
# A SET's jti: "e<event id>.<client_id>" for an event, "g<gap number>.<client_id>" for a
# gap notice (each gap its own number). The client_id makes each SET's jti its own (RFC
# 7519 §4.1.7: no two alike).
_JTI = re.compile(r"([eg])([0-9]{1,18})\.(.+)", re.DOTALL)
EVENT = "e"
GAP = "g"


@dataclass(frozen=True, slots=True)
class Poll:
    """A parsed poll request (§2.4)."""

    max_events: int = DEFAULT_MAX_EVENTS
    return_immediately: bool = False
    # The jtis acknowledged, from `ack` and `setErrs` alike.
    acks: tuple[str, ...] = ()
    # (jti, err) of each `setErrs` entry, for the log.
    errors: tuple[tuple[str, str], ...] = ()
    receiver: str = ""
    # Client authentication parameters found in the body.
    auth: dict[str, str] = field(default_factory=dict, repr=False)


def parse(raw: bytes) -> Poll:
    """The poll request in `raw` (a JSON object); `InvalidRequest` naming what is wrong."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    errors = _errors(body)
    return Poll(
        max_events=_max_events(body.get("maxEvents", DEFAULT_MAX_EVENTS)),
        return_immediately=_flag(body.get("returnImmediately", False), "returnImmediately"),
        acks=(*_acks(body.get("ack", [])), *(jti for jti, _ in errors)),
        errors=tuple(errors),
        receiver=_receiver(body.get("receiver", "")),
        auth=_auth(body),
    )


def _max_events(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequest("maxEvents must be a non-negative integer")
    return min(value, MAX_EVENTS)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false")
    return value


def _jti(value: object, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_JTI:
        raise InvalidRequest(f"{name}: each jti must be a string of 1 to {MAX_JTI} characters")
    return value


def _acks(value: object) -> list[str]:
    if not isinstance(value, list):
        raise InvalidRequest("ack must be an array of jti strings")
    if len(value) > MAX_ACKS:
        raise InvalidRequest(f"ack: at most {MAX_ACKS} jtis per request")
    return [_jti(v, "ack") for v in value]


def _errors(body: dict[str, Any]) -> list[tuple[str, str]]:
    value = body.get("setErrs", {})
    if not isinstance(value, dict):
        raise InvalidRequest("setErrs must be an object of jti -> {err, description}")
    if len(value) > MAX_ACKS:
        raise InvalidRequest(f"setErrs: at most {MAX_ACKS} entries per request")
    out = []
    for jti, error in value.items():
        _jti(jti, "setErrs")
        if not isinstance(error, dict) or not isinstance(error.get("err"), str):
            raise InvalidRequest("setErrs: each entry must be an object with an err string")
        description = error.get("description")
        if description is not None and not isinstance(description, str):
            raise InvalidRequest("setErrs: description must be a string")
        out.append((jti, error["err"][:64]))
    return out


def _receiver(value: object) -> str:
    if value == "":
        return ""
    if not isinstance(value, str) or not _RECEIVER.fullmatch(value):
        raise InvalidRequest("receiver must be 1 to 64 characters of A-Z a-z 0-9 . _ ~ -")
    return value


def _auth(body: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name in AUTH_MEMBERS:
        if name in body:
            value = body[name]
            if not isinstance(value, str):
                raise InvalidRequest(f"{name} must be a string")
            out[name] = value
    return out


def jti(kind: str, number: int, client_id: str) -> str:
    """The jti of a SET for `client_id`: an event's (EVENT, its id) or a gap notice's (GAP,
    its number)."""
    return f"{kind}{number}.{client_id}"


def parse_jti(value: str, client_id: str) -> tuple[str, int] | None:
    """(kind, number) of a jti made by `jti` for `client_id`; None for any other."""
    match = _JTI.fullmatch(value)
    if match is None or match.group(3) != client_id:
        return None
    return match.group(1), int(match.group(2))


def response(sets: dict[str, str], more_available: bool) -> dict[str, Any]:
    """The §2.5 answer."""
    return {"sets": sets, "moreAvailable": more_available}
