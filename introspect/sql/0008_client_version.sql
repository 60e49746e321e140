-- Client records are cached in Redis too (introspect/cache.py): like a
-- credential, a client takes a fresh version from `change_version` with every
-- change to it or to its secrets, in the transaction that makes the change,
-- so that a cache fill of an older record is refused. Existing clients get one
-- each from the column's default.
ALTER TABLE clients ADD COLUMN version bigint NOT NULL DEFAULT nextval('change_version');
