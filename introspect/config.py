"""One frozen Settings object, read from the environment and validated once.

Secrets (the HMAC keys, passwords inside URLs) never appear in a repr or a
log line: `Settings.__repr__` masks them.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit


class ConfigError(Exception):
    """The environment names an invalid setting; the message says which."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _mask_url(url: str | None) -> str | None:
    if url is None:
        return None
    return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server, the CLI and the tests configure."""

    database_url: str | None
    redis_url: str | None
    data_dir: Path
    # INTROSPECT_REDIS_CLUSTER: `redis_url` names seed nodes (comma-separated) of a cluster.
    redis_cluster: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    admin_port: int | None = None
    issuer_override: str | None = None
    # The HMAC keys for stored credential hashes: the first hashes new
    # credentials, the others still verify old ones.
    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    # Cache tuning: a size of 0 turns the in-process layer off, a Redis TTL of 0 the Redis
    # layer (invalidations are still published and applied).
    local_cache_size: int = 100_000
    # (Coherence comes from the invalidations and the heartbeat, not from this lifetime: it
    # bounds how often a worker reads an entry again from Redis.)
    local_cache_ttl: float = 60.0
    redis_cache_ttl: int = 300
    negative_cache_ttl: int = 30
    # How long a resource server following the revocation feed may reuse an introspection
    # answer (its Cache-Control max-age, never past the credential's exp).
    rs_cache_ttl: int = 60
    # Limits.
    max_body_size: int = 64 * 1024
    # Seconds an idle keep-alive connection is kept open.
    keepalive_timeout: int = 75
    access_log: bool = False
    # Seconds a developer portal session lasts at most (sign-out ends it sooner).
    portal_session_ttl: int = 8 * 3600

    @property
    def longest_cache_ttl(self) -> float:
        """The longest time any cache (ours or a resource server's) may hold an answer."""
        return max(
            self.local_cache_ttl,
            self.redis_cache_ttl,
            self.negative_cache_ttl,
            self.rs_cache_ttl,
        )

    @property
    def embedded(self) -> bool:
        """True when at least one store is the private embedded server."""
        return self.database_url is None or self.redis_url is None

    @property
    def issuer(self) -> str:
        """`iss` of everything issued: the override, or the listen address in effect."""
        if self.issuer_override:
            return self.issuer_override.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def with_listen(self, host: str | None, port: int | None) -> Settings:
        """The same settings listening elsewhere (command-line flags win over variables)."""
        return replace(
            self,
            host=host if host is not None else self.host,
            port=port if port is not None else self.port,
        )

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "secrets":
                value = f"<{len(value)} secret(s)>"
            elif f.name in ("database_url", "redis_url"):
                value = _mask_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"


def _load_or_create_secret(data_dir: Path) -> bytes:
    """The embedded-mode server secret: generated once into the data dir, 0600."""
    path = data_dir / "secret"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip().encode()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()


def _validate_url(name: str, url: str | None, schemes: tuple[str, ...]) -> None:
    if url is None:
        return
    scheme = urlsplit(url).scheme
    if scheme not in schemes:
        raise ConfigError(f"{name} must start with one of {', '.join(schemes)}")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the INTROSPECT_* variables; raise ConfigError on a bad one."""
    env = os.environ if env is None else env
    database_url = env.get("INTROSPECT_DATABASE_URL") or None
    redis_url = env.get("INTROSPECT_REDIS_URL") or None
    _validate_url("INTROSPECT_DATABASE_URL", database_url, ("postgresql", "postgres"))
    redis_cluster = env.get("INTROSPECT_REDIS_CLUSTER", "") in ("1", "true", "yes")
    if redis_cluster and redis_url is None:
        raise ConfigError(
            "INTROSPECT_REDIS_CLUSTER=true needs INTROSPECT_REDIS_URL: a seed node of the cluster"
        )
    if redis_cluster:  # cluster nodes are reached over TCP, whatever a seed looks like
        for seed in (redis_url or "").split(","):
            _validate_url("INTROSPECT_REDIS_URL", seed.strip(), ("redis", "rediss"))
    else:
        _validate_url("INTROSPECT_REDIS_URL", redis_url, ("redis", "rediss", "unix"))
    data_dir = Path(env.get("INTROSPECT_DATA_DIR") or "./.introspect").absolute()

    raw_secret = env.get("INTROSPECT_SECRET") or ""
    keys = tuple(s.strip().encode() for s in raw_secret.split(",") if s.strip())
    if not keys:
        if database_url is not None:
            raise ConfigError(
                "INTROSPECT_SECRET is required with INTROSPECT_DATABASE_URL: "
                "every instance must share it"
            )
        keys = (_load_or_create_secret(data_dir),)
    for key in keys:
        if len(key) < 16:
            raise ConfigError("each INTROSPECT_SECRET value must be at least 16 characters")

    admin_port_raw = env.get("INTROSPECT_ADMIN_PORT")
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=data_dir,
        redis_cluster=redis_cluster,
        host=env.get("INTROSPECT_HOST") or "127.0.0.1",
        port=_int(env, "INTROSPECT_PORT", 8080),
        admin_port=_int(env, "INTROSPECT_ADMIN_PORT", 0) if admin_port_raw else None,
        issuer_override=env.get("INTROSPECT_ISSUER") or None,
        secrets=keys,
        local_cache_size=_int(env, "INTROSPECT_LOCAL_CACHE_SIZE", 100_000),
        local_cache_ttl=float(_int(env, "INTROSPECT_LOCAL_CACHE_TTL", 60)),
        redis_cache_ttl=_int(env, "INTROSPECT_REDIS_CACHE_TTL", 300),
        negative_cache_ttl=_int(env, "INTROSPECT_NEGATIVE_CACHE_TTL", 30, minimum=1),
        rs_cache_ttl=_int(env, "INTROSPECT_RS_CACHE_TTL", 60),
        keepalive_timeout=_int(env, "INTROSPECT_KEEPALIVE_TIMEOUT", 75, minimum=1),
        access_log=env.get("INTROSPECT_ACCESS_LOG", "") in ("1", "true", "yes"),
        portal_session_ttl=_int(env, "INTROSPECT_PORTAL_SESSION_TTL", 8 * 3600, minimum=60),
    )
