-- How each client authenticates at the token, introspection and revocation
-- endpoints, by its RFC 7591 name: `client_secret_basic` (its secret, in the
-- Basic header or the body as `client_secret_post`; a `jwks` may be used too)
-- or `private_key_jwt` (only RFC 7523 assertions; such a client has no secret).
ALTER TABLE clients ADD COLUMN token_endpoint_auth_method text NOT NULL
    DEFAULT 'client_secret_basic'
    CHECK (token_endpoint_auth_method IN ('client_secret_basic', 'private_key_jwt'));

-- Deleting a client now forgets its JWK Set as well as its secrets. Clients
-- deleted before did keep it: a deleted client is disabled and has no secret
-- left (every client had one until this migration), so forget theirs too,
-- lest re-enabling one revive key-based authentication.
UPDATE clients SET jwks = NULL
WHERE disabled AND jwks IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM client_secrets s WHERE s.client_id = clients.client_id);
