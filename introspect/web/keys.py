"""Typed application keys: the only way views reach shared resources."""

from __future__ import annotations

from aiohttp import web

from introspect.config import Settings
from introspect.service import Authority
from introspect.supervisor import Board
from introspect.web.health import Readiness

AUTHORITY = web.AppKey("authority", Authority)
SETTINGS = web.AppKey("settings", Settings)
READINESS = web.AppKey("readiness", Readiness)
# The supervisor's board: in the workers of `introspect serve` only (introspect/supervisor.py).
BOARD = web.AppKey("board", Board)
