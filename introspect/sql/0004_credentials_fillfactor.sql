-- Room on every page of `credentials` for the new version of a row, so that a
-- revocation and a `last_used_at` write (neither column is indexed) are HOT
-- updates: no new entry in any of the four indexes, less WAL, less bloat.
-- Pages already full keep their layout until rewritten; new rows get the room.
ALTER TABLE credentials SET (fillfactor = 90);
