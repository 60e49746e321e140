-- Rate limits and credits (SPEC "Rate limits and credits", introspect/limits/).
-- `limits` on an API key or a client holds what an admin set: its rate_limits
-- (windows counted in Redis) and, when it has credits, their refill and the
-- generation of its balance; the balance itself is a row of credit_accounts,
-- the truth that workers take leases from (one conditional write per lease).

ALTER TABLE credentials ADD COLUMN limits jsonb;
ALTER TABLE clients ADD COLUMN limits jsonb;

CREATE TABLE credit_accounts (
    -- 'api_key:<id>' or 'client:<client_id>'.
    owner           text PRIMARY KEY,
    -- Taken from change_version each time an admin sets the credits: leases of an
    -- older generation are void.
    generation      bigint NOT NULL,
    remaining       bigint NOT NULL CHECK (remaining >= 0),
    refill_amount   bigint CHECK (refill_amount >= 0),
    refill_interval integer CHECK (refill_interval >= 60),
    -- The refill interval number (epoch seconds / interval) `remaining` belongs to.
    period          bigint NOT NULL DEFAULT 0
);

-- Credits a worker took from an account and spends locally. A worker returns
-- what it did not spend (deleting its row); a row left past its expiry was
-- held by a worker that died: its amount is reported as lost, never silently
-- handed out again (whether it was spent is unknown).
CREATE TABLE credit_leases (
    id         bigserial PRIMARY KEY,
    owner      text NOT NULL REFERENCES credit_accounts (owner) ON DELETE CASCADE,
    generation bigint NOT NULL,
    period     bigint NOT NULL,
    holder     text NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0),
    taken_at   bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX credit_leases_owner ON credit_leases (owner, expires_at);
