"""The developer portal: API consumers create, roll, rename and revoke their own API keys.

`sessions` (one-time links, session cookies, CSRF), `keys` (what a consumer
may do, through the admin operations and the one revocation path), `forms`
(the pages' validation, pure), `store` (its queries), `web` (the pages under
/portal), `cli` (`introspect portal-link`). SPEC "Developer portal".
"""
