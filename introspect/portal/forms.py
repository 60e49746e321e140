"""The portal's forms, validated: pure functions from submitted fields to admin API bodies.

Each takes the parsed form (`introspect.forms.parse_form`: name -> its
non-empty values) and answers the body that the admin operation behind it
takes, or raises `Invalid` with a message fit to show the consumer. The
admin operation validates its body again; these add the portal's own
limits: scopes within the session's, a grace period of at most 7 days,
expiry as a few choices or a date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from introspect.admin.api_keys import MAX_EPOCH
from introspect.admin.validation import MAX_KEY_NAME
from introspect.errors import Invalid

Form = Mapping[str, Sequence[str]]

DAY = 86_400
MAX_GRACE = 7 * DAY
# The expiry choices of the create form, and their lifetimes (None: never expires).
EXPIRY_CHOICES: dict[str, int | None] = {"never": None, "30": 30 * DAY, "90": 90 * DAY}
# The grace periods offered when rolling a key (seconds, label); any whole number of seconds
# up to MAX_GRACE is accepted.
GRACE_CHOICES = (
    (0, "no time: stop it now"),
    (3600, "1 hour"),
    (DAY, "1 day"),
    (MAX_GRACE, "7 days"),
)


def one(form: Form, name: str) -> str | None:
    """The single value of a field, or None when absent; a repeated field is `Invalid`."""
    values = form.get(name, ())
    if len(values) > 1:
        raise Invalid(f"{name[:40]}: sent more than once")
    return values[0] if values else None


def name_field(form: Form) -> str | None:
    """The key's name: printable, at most MAX_KEY_NAME characters; empty means none."""
    value = one(form, "name")
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_KEY_NAME:
        raise Invalid(f"Name: at most {MAX_KEY_NAME} characters")
    if not value.isprintable():
        raise Invalid("Name: only printable characters")
    return value


def scopes_field(form: Form, allowed: Sequence[str]) -> list[str]:
    """The scopes ticked, each one the session allows; at least one."""
    chosen = list(dict.fromkeys(form.get("scope", ())))
    if not chosen:
        raise Invalid("Scopes: choose at least one")
    outside = [s for s in chosen if s not in allowed]
    if outside:
        raise Invalid("Scopes: you may not give a key " + " ".join(outside)[:120])
    return chosen


def date_field(form: Form, now: int) -> int:
    """The epoch second a key given an expiry date expires: 00:00 UTC of that day."""
    raw = one(form, "expires_on")
    if raw is None:
        raise Invalid("Expiry date: give a date (YYYY-MM-DD)")
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        raise Invalid("Expiry date: not a date (YYYY-MM-DD)") from None
    at = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
    if at <= now:
        raise Invalid("Expiry date: choose a day after today")
    if at > MAX_EPOCH:
        raise Invalid("Expiry date: too far in the future")
    return at


def expiry_field(form: Form, now: int) -> int | None:
    """When a key expires (epoch seconds), from a choice (never, 30 or 90 days) or a date."""
    choice = one(form, "expiry") or "never"
    if choice == "date":
        return date_field(form, now)
    if choice not in EXPIRY_CHOICES:
        raise Invalid("Expiry: choose never, 30 days, 90 days or a date")
    lifetime = EXPIRY_CHOICES[choice]
    return None if lifetime is None else now + lifetime


def create_body(form: Form, allowed: Sequence[str], now: int) -> dict[str, Any]:
    """The fields of a new key (without its owner): name, scopes, expires_in."""
    body: dict[str, Any] = {"scopes": scopes_field(form, allowed)}
    name = name_field(form)
    if name is not None:
        body["name"] = name
    exp = expiry_field(form, now)
    if exp is not None:
        body["expires_in"] = exp - now
    return body


def update_body(form: Form, now: int) -> dict[str, Any]:
    """A key's new name and expiry: `expiry` `keep` leaves its expiry as it is."""
    body: dict[str, Any] = {"name": name_field(form)}
    if (one(form, "expiry") or "keep") != "keep":
        body["expires_at"] = expiry_field(form, now)
    return body


def grace_field(form: Form) -> int:
    """A roll's grace period in seconds: a whole number from 0 to 7 days."""
    raw = one(form, "grace") or "0"
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 7 and int(raw) <= MAX_GRACE):
        raise Invalid("Grace period: from none up to 7 days")
    return int(raw)
