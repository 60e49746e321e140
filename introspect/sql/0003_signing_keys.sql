-- Signing keys for JWT access tokens (RFC 9068) and signed introspection
-- answers (RFC 9701), published at /jwks.json (RFC 7517). See
-- introspect/signing.py for the life of a key: published at once, the
-- signer from `activates_at` on, retired once superseded and every token it
-- signed has expired. Times are integer epoch seconds.

CREATE TABLE signing_keys (
    kid          text PRIMARY KEY,
    -- Orders keys that activate in the same second.
    seq          bigserial UNIQUE,
    alg          text NOT NULL CHECK (alg IN ('ES256', 'EdDSA')),
    -- The public JWK as served, with kid, alg and use.
    public_jwk   jsonb NOT NULL,
    -- AES-256-GCM (key derived from the server secret by HKDF-SHA256) of the
    -- PKCS#8 private key: a 12-byte nonce, then the ciphertext. NULL once retired.
    private_key  bytea,
    created_at   bigint NOT NULL,
    activates_at bigint NOT NULL,
    -- No token signed by this key expires after this (raised before each signature).
    signed_until bigint NOT NULL DEFAULT 0,
    retired_at   bigint,
    CHECK (retired_at IS NOT NULL OR private_key IS NOT NULL)
);
CREATE INDEX signing_keys_live ON signing_keys (activates_at, seq) WHERE retired_at IS NULL;
