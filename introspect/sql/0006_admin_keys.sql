-- Admin keys get a lifecycle: a role (`admin`: every admin route; `auditor`:
-- the GET routes only), an optional expiry and the time of last use (written
-- in batches, like API keys'). Keys minted before this migration keep every
-- right they had: role `admin`, no expiry.

ALTER TABLE admin_keys
    ADD COLUMN role text NOT NULL DEFAULT 'admin' CHECK (role IN ('admin', 'auditor')),
    ADD COLUMN expires_at bigint,
    ADD COLUMN last_used_at bigint;

-- Listing pages go in creation order.
CREATE INDEX admin_keys_created ON admin_keys (created_at, id);
