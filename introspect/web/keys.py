"""Typed application keys: the only way views reach shared resources."""

from __future__ import annotations

from aiohttp import web

from introspect.config import Settings
from introspect.service import Authority
from introspect.supervisor import Board
from introspect.web.health import Readiness
from introspect.web.protocol import Answers

AUTHORITY = web.AppKey("authority", Authority)
SETTINGS = web.AppKey("settings", Settings)
READINESS = web.AppKey("readiness", Readiness)
# The app's answer hook, whose `draining` a worker sets when it stops (server.Drain).
ANSWERS = web.AppKey("answers", Answers)
# The supervisor's board: in the workers of `introspect serve` only (introspect/supervisor.py).
BOARD = web.AppKey("board", Board)
