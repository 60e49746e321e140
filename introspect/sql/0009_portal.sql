-- The developer portal (introspect/portal/): API keys get an optional name and
-- a stored display prefix (the first characters of the key, never the whole
-- key), and consumers enter the portal through one-time links that become
-- sessions. A link and a session cookie are secrets: only their keyed hashes
-- are stored, like every credential.

ALTER TABLE credentials
    ADD COLUMN name text,
    ADD COLUMN prefix text;

CREATE TABLE portal_sessions (
    id              text PRIMARY KEY,
    sub             text NOT NULL,
    client_id       text REFERENCES clients (client_id),
    scopes          text[] NOT NULL,
    return_url      text,
    created_at      bigint NOT NULL,
    -- The one-time link: works once (redeemed_at set), until link_expires_at.
    link_hash       bytea NOT NULL UNIQUE,
    link_expires_at bigint NOT NULL,
    redeemed_at     bigint,
    -- The session cookie, from the redemption on, until expires_at or sign-out (ended_at).
    cookie_hash     bytea UNIQUE,
    expires_at      bigint,
    ended_at        bigint
);
CREATE INDEX portal_sessions_sub ON portal_sessions (sub, id);
