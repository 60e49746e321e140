"""Typed application keys: the only way views reach shared resources."""

from __future__ import annotations

from aiohttp import web

from introspect.config import Settings
from introspect.service import Authority

AUTHORITY = web.AppKey("authority", Authority)
SETTINGS = web.AppKey("settings", Settings)
