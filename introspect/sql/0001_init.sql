-- The core schema: clients and their secret hashes, credentials (access
-- tokens and API keys, stored only as keyed hashes), admin keys, the audit
-- log and the invalidation outbox. Times are integer epoch seconds.

-- One sequence versions every change to a credential or client, so cache
-- writers can order their writes (see introspect/cache.py).
CREATE SEQUENCE change_version;

CREATE TABLE clients (
    client_id      text PRIMARY KEY,
    name           text NOT NULL,
    scopes         text[] NOT NULL DEFAULT '{}',
    audiences      text[] NOT NULL DEFAULT '{}',
    can_introspect boolean NOT NULL DEFAULT false,
    token_ttl      integer NOT NULL DEFAULT 3600 CHECK (token_ttl > 0),
    token_format   text NOT NULL DEFAULT 'opaque' CHECK (token_format IN ('opaque', 'jwt')),
    jwks           jsonb,
    disabled       boolean NOT NULL DEFAULT false,
    created_at     bigint NOT NULL,
    updated_at     bigint NOT NULL
);
CREATE INDEX clients_created ON clients (created_at, client_id);

CREATE TABLE client_secrets (
    id          bigserial PRIMARY KEY,
    client_id   text NOT NULL REFERENCES clients (client_id),
    secret_hash bytea NOT NULL,
    created_at  bigint NOT NULL,
    -- NULL while current; set to the end of the grace period when rotated out.
    expires_at  bigint
);
CREATE INDEX client_secrets_client ON client_secrets (client_id);

CREATE TABLE credentials (
    -- The public id, also the `jti` of the credential.
    id           text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('access_token', 'api_key')),
    format       text NOT NULL DEFAULT 'opaque' CHECK (format IN ('opaque', 'jwt')),
    hash         bytea NOT NULL UNIQUE,
    client_id    text REFERENCES clients (client_id),
    sub          text NOT NULL,
    username     text,
    scopes       text[] NOT NULL,
    audiences    text[] NOT NULL,
    iat          bigint NOT NULL,
    nbf          bigint NOT NULL,
    exp          bigint,
    revoked_at   bigint,
    metadata     jsonb,
    version      bigint NOT NULL DEFAULT nextval('change_version'),
    last_used_at bigint,
    CHECK (client_id IS NOT NULL OR kind = 'api_key')
);
CREATE INDEX credentials_client ON credentials (client_id, id);
CREATE INDEX credentials_sub ON credentials (sub, id);

CREATE TABLE admin_keys (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    hash       bytea NOT NULL UNIQUE,
    created_at bigint NOT NULL,
    revoked_at bigint
);

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          bigint NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    target_kind text NOT NULL,
    target_id   text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_action ON audit_log (action, id);
CREATE INDEX audit_target ON audit_log (target_id, id);
CREATE INDEX audit_actor ON audit_log (actor, id);

-- Cache invalidations committed with their change and not yet published
-- (Redis was unreachable): replayed by every worker once Redis is back.
CREATE TABLE invalidation_outbox (
    id         bigserial PRIMARY KEY,
    message    bytea NOT NULL,
    created_at bigint NOT NULL
);
