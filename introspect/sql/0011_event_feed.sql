-- The revocation feed (RFC 8936 poll delivery of RFC 8417 SETs, introspect/feed.py).
--
-- One row per event a resource server may need, written in the transaction of
-- the change that causes it, beside its change-log row (invalidation_outbox).
-- `audiences` says who may see it, by the rule of /introspect: a caller
-- registered without audiences sees every event, one with audiences only the
-- events sharing one of them.
CREATE TABLE feed_events (
    id         bigserial PRIMARY KEY,
    -- Seconds since the epoch (fractional), when the event was written: for the
    -- delivery-lag metric and retention.
    created_at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()),
    type       text NOT NULL,
    subject    jsonb NOT NULL,
    audiences  text[] NOT NULL
);
CREATE INDEX feed_events_created_at ON feed_events (created_at);

-- Ids in commit order: a receiver's position may then move past every id it
-- has seen without skipping a row that commits later with a smaller id. The
-- first insert of a transaction takes a transaction-level lock and only then
-- draws its id, so an id is drawn only after every earlier writer committed.
CREATE FUNCTION feed_events_in_commit_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(8417893601);
    NEW.id := nextval(pg_get_serial_sequence('feed_events', 'id'));
    NEW.created_at := extract(epoch FROM clock_timestamp());
    RETURN NEW;
END $$;
CREATE TRIGGER feed_events_in_commit_order BEFORE INSERT ON feed_events
    FOR EACH ROW EXECUTE FUNCTION feed_events_in_commit_order();

-- Every event up to this id has been pruned: a receiver whose position is
-- below it missed events (it is told so: a gap SET).
CREATE TABLE feed_horizon (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    pruned_through bigint NOT NULL
);
INSERT INTO feed_horizon (pruned_through) VALUES (0);

-- Each receiver's position: every event it may see up to `position` is
-- acknowledged, and so are the ids in `acked` (above it). A receiver is a
-- client polling with an optional receiver name of its choosing.
CREATE SEQUENCE feed_gaps;
CREATE TABLE feed_receivers (
    client_id text NOT NULL,
    receiver  text NOT NULL,
    position  bigint NOT NULL,
    acked     bigint[] NOT NULL DEFAULT '{}',
    -- The number of the feed-gap SET it is owed (from feed_gaps: each gap its own
    -- jti), until it acknowledges it: a new position, events pruned before it read
    -- them, or a change of its own audiences.
    gap       bigint,
    polled_at bigint NOT NULL,
    PRIMARY KEY (client_id, receiver)
);
