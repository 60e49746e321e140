"""Client secret rotation through the admin API, with and without a grace period."""

from __future__ import annotations

from introspect.service import Authority
from tests.admin_helpers import created_client, rotate_secret, token_works
from tests.helpers import AdminAPI, Server, eventually


async def test_rotated_secret_works_until_the_grace_period_ends(
    server: Server, api: AdminAPI
) -> None:
    """After a rotation with grace, both secrets work; when the grace ends the old one fails."""
    created = await created_client(api)
    client_id, old = created["client_id"], created["client_secret"]
    new = await rotate_secret(api, client_id, {"grace_period": 2})
    assert await token_works(server, client_id, new)
    assert await token_works(server, client_id, old)

    async def old_refused() -> bool:
        return not await token_works(server, client_id, old)

    await eventually(old_refused, within=5)
    assert await token_works(server, client_id, new)


async def test_rotation_without_grace_retires_the_old_secret_at_once(
    server: Server, api: AdminAPI
) -> None:
    """A rotation with no body, or a null or zero grace period, retires the old secret at once."""
    created = await created_client(api)
    client_id, current = created["client_id"], created["client_secret"]
    for body in (None, {}, {"grace_period": None}, {"grace_period": 0}):
        new = await rotate_secret(api, client_id, body)
        assert not await token_works(server, client_id, current)
        assert await token_works(server, client_id, new)
        current = new


async def test_repeated_rotations_keep_at_most_two_secrets_in_grace(
    server: Server, api: AdminAPI, authority: Authority
) -> None:
    """Rotating again and again keeps the current secret and only the two newest in grace."""
    created = await created_client(api)
    client_id = created["client_id"]
    issued = [created["client_secret"]]
    for _ in range(4):
        issued.append(await rotate_secret(api, client_id, {"grace_period": 600}))
    works = [await token_works(server, client_id, s) for s in issued]
    assert works == [False, False, True, True, True]
    rows = await authority.pool.fetchval(
        "SELECT count(*) FROM client_secrets WHERE client_id = $1", client_id
    )
    assert rows == 3
