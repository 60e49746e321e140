-- The invalidation outbox becomes the change log (consistency promise 6).
--
-- A row used to be deleted once its invalidation was published. Redis may
-- lose writes after acknowledging them (a restart from an older snapshot, a
-- failover to a replica that missed them, a flush), so every change is now
-- kept for at least the longest cache lifetime, published or not: a worker
-- that meets a Redis whose history it cannot vouch for writes the changes of
-- that window to it again (introspect/history.py). Rows are pruned by age.
ALTER TABLE invalidation_outbox ADD COLUMN published_at bigint;
-- Rows published before this migration were deleted; those left are pending.
CREATE INDEX invalidation_outbox_created_at ON invalidation_outbox (created_at);
CREATE INDEX invalidation_outbox_pending ON invalidation_outbox (id) WHERE published_at IS NULL;

-- Every Redis history this deployment vouched for, by when its replay started:
-- a Redis that forgot a private_key_jwt assertion's jti must not accept it again
-- (introspect/history.py), except in the very first history, which forgot nothing.
CREATE TABLE redis_histories (
    id         bigserial PRIMARY KEY,
    started_at bigint NOT NULL
);
