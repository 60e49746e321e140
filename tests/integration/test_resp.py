"""The lean pipelined Redis client against a real Valkey: ordering, errors, reconnection."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import redis.asyncio as redis
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from introspect.redis.resp import Client, Replied, ServerChanged, Subscription
from tests.conftest import Stores
from tests.helpers import eventually, free_port
from tests.valkey import Valkey

WAIT = 5.0  # an upper bound for things that should happen at once, never a measured duration


def unique(name: str) -> str:
    """A key or channel name no other test uses."""
    return f"test-resp:{name}:{secrets.token_hex(8)}"


@pytest.fixture
async def client(stores: Stores) -> AsyncIterator[Client]:
    """A lean client on the session's Valkey, closed at the end."""
    lean = Client(stores.redis_url)
    try:
        yield lean
    finally:
        lean.close()


@pytest.fixture
async def admin(stores: Stores) -> AsyncIterator[redis.Redis]:
    """A redis-py client on the session's Valkey, for checks from another connection."""
    other = redis.Redis.from_url(stores.redis_url)
    try:
        yield other
    finally:
        await other.aclose()


async def test_batch_replies_come_in_order_with_errors_in_place(client: Client) -> None:
    """A mixed batch gets replies in order, an error reply in its place; later batches work."""
    key, text = unique("mixed"), unique("text")
    replies = await client.execute(
        ("SET", key, 41),
        ("INCR", key),
        ("SET", text, "é\r\n"),
        ("INCR", text),
        ("GET", text),
        ("MGET", key, text, unique("absent")),
        ("DEL", key, text),
    )
    assert replies[:3] == [b"OK", 42, b"OK"]
    assert isinstance(replies[3], ResponseError)
    assert "not an integer" in str(replies[3])
    assert replies[4:] == ["é\r\n".encode(), [b"42", "é\r\n".encode(), None], 2]
    assert await client.execute(("PING",), ("ECHO", b"\x00\r\n")) == [b"PONG", b"\x00\r\n"]


async def test_unknown_command_is_an_error_reply_not_a_failure(client: Client) -> None:
    """An unknown command's error stays in its place and the connection keeps serving."""
    replies = await client.execute(("NO-SUCH-COMMAND",), ("PING",))
    assert isinstance(replies[0], ResponseError)
    assert replies[1] == b"PONG"


async def test_concurrent_batches_each_get_their_own_replies(client: Client) -> None:
    """Five hundred batches in flight at once each get the replies to their own commands."""
    keys = [unique(f"many-{i}") for i in range(500)]

    async def roundtrip(i: int) -> list[object]:
        return await client.execute(("SET", keys[i], f"value-{i}"), ("GET", keys[i]))

    results = await asyncio.gather(*(roundtrip(i) for i in range(500)))
    assert results == [[b"OK", f"value-{i}".encode()] for i in range(500)]
    assert await client.call("DEL", *keys) == 500


async def test_batches_of_one_iteration_share_a_write_and_its_fate(client: Client) -> None:
    """Batches made in one loop iteration are written together at its end: when the
    connection is aborted before that, every one of them fails, none half-sent shifts a
    reply, and the next call gets its own replies on a new connection."""
    key = unique("queued")
    await client.call("PING")
    protocol = client._protocol
    assert protocol is not None
    assert protocol.transport is not None
    batches = [asyncio.ensure_future(client.execute(("INCR", key))) for _ in range(3)]
    await asyncio.sleep(0)  # each batch is queued; the write comes after this iteration
    protocol.transport.abort()
    for batch in batches:
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(batch, WAIT)
    assert await client.execute(("INCR", key), ("GET", key), ("DEL", key)) == [1, b"1", 1]


async def test_a_cancelled_batch_does_not_shift_later_replies(client: Client) -> None:
    """A caller that gives up on its batch does not get its replies handed to the next caller."""
    first, second = unique("first"), unique("second")
    await client.execute(("SET", first, "1"), ("SET", second, "2"))
    task = asyncio.ensure_future(client.execute(("GET", first), ("GET", first)))
    await asyncio.sleep(0)  # the batch is written; its caller now waits for the replies
    task.cancel()
    assert await client.execute(("GET", second)) == [b"2"]
    assert task.cancelled()
    await client.call("DEL", first, second)


def _collector() -> tuple[asyncio.Future[list[Any] | BaseException], Replied]:
    """A future set with what a `send_then` callback is handed (once; a second call fails)."""
    got: asyncio.Future[list[Any] | BaseException] = asyncio.get_running_loop().create_future()
    return got, got.set_result


async def test_send_then_needs_an_open_connection_and_sends_nothing_without(
    client: Client,
) -> None:
    """With no connection open, `send_then` says so and never calls back; `execute` opens one."""
    got, replied = _collector()
    assert not client.send_then([("PING",)], replied)
    await asyncio.sleep(0)
    assert not got.done()
    assert await client.call("PING") == b"PONG"
    assert client.send_then([("PING",)], replied)
    assert await asyncio.wait_for(got, WAIT) == [b"PONG"]


async def test_send_then_keeps_order_with_batches_queued_before_it(client: Client) -> None:
    """A batch sent at once goes behind what the same iteration queued: each gets its own
    replies, error replies in place, handed to its callback."""
    key = unique("now")
    await client.call("PING")
    queued = asyncio.ensure_future(client.execute(("SET", key, 1), ("INCR", key)))
    await asyncio.sleep(0)  # queued, its write left for the end of the iteration
    assert client._protocol is not None
    got, replied = _collector()
    queued_too = client._protocol.send([("INCR", key)])
    assert client.send_then([("INCR", key), ("HGET", key, "f"), ("GET", key)], replied)
    assert await asyncio.wait_for(queued, WAIT) == [b"OK", 2]
    assert await asyncio.wait_for(queued_too, WAIT) == [3]
    four, wrong_type, value = cast(list[Any], await asyncio.wait_for(got, WAIT))
    assert (four, value) == (4, b"4")
    assert isinstance(wrong_type, ResponseError)
    await client.call("DEL", key)


async def test_send_then_refuses_another_server_before_sending(stores: Stores) -> None:
    """With an identity the connection does not reach, ServerChanged and nothing sent."""
    identifying = Client(stores.redis_url, identify=True)
    try:
        server = await identifying.server()
        got, replied = _collector()
        with pytest.raises(ServerChanged):
            identifying.send_then([("PING",)], replied, identity=b"another:server")
        assert identifying.send_then([("PING",)], replied, identity=server.identity)
        assert await asyncio.wait_for(got, WAIT) == [b"PONG"]
    finally:
        identifying.close()


async def test_send_then_hands_a_lost_connection_to_its_callback(
    client: Client, admin: redis.Redis
) -> None:
    """A batch sent at once whose connection dies gets the ConnectionError in its callback."""
    key = unique("lost")
    old_id = await client.call("CLIENT", "ID")
    got, replied = _collector()
    assert client.send_then([("BLPOP", key, 0)], replied)

    async def blocked() -> bool:
        clients = await admin.client_list(client_type="normal")
        return any(int(c["id"]) == old_id and c["cmd"] == "blpop" for c in clients)

    await eventually(blocked, within=WAIT)
    assert await admin.execute_command("CLIENT", "KILL", "ID", old_id) == 1
    assert isinstance(await asyncio.wait_for(got, WAIT), ConnectionError)
    assert await client.call("PING") == b"PONG"


async def test_call_raises_an_error_reply(client: Client) -> None:
    """`call` raises the command's error reply as a ResponseError."""
    key = unique("call")
    assert await client.call("SET", key, "x") == b"OK"
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await client.call("LPUSH", key, "y")
    assert await client.call("GET", key) == b"x"
    assert await client.call("DEL", key) == 1


async def test_wrong_password_raises_authentication_error(stores: Stores) -> None:
    """A URL with the wrong password fails with AuthenticationError, not a reply."""
    endpoint = Client(stores.redis_url).endpoint
    wrong = Client(f"redis://:not-the-password@{endpoint.host}:{endpoint.port}/0")
    try:
        with pytest.raises(AuthenticationError):
            await wrong.call("PING")
    finally:
        wrong.close()


async def test_bad_database_index_is_an_error_reply_not_an_authentication_error(
    stores: Stores,
) -> None:
    """A SELECT the server refuses fails as that reply, with the right password accepted."""
    endpoint = Client(stores.redis_url).endpoint
    bad_db = Client(f"redis://:{endpoint.password}@{endpoint.host}:{endpoint.port}/99")
    try:
        with pytest.raises(ResponseError) as raised:
            await bad_db.call("PING")
        assert not isinstance(raised.value, AuthenticationError)
    finally:
        bad_db.close()


async def test_client_closed_while_connecting_leaves_no_connection(stores: Stores) -> None:
    """A call whose connection is still opening when the client closes fails and keeps none."""
    lean = Client(stores.redis_url)
    pending = asyncio.create_task(lean.call("PING"))
    await asyncio.sleep(0)  # the connection attempt has started
    lean.close()
    with pytest.raises(ConnectionError):
        await pending
    assert lean._protocol is None


async def test_closed_port_raises_connection_error() -> None:
    """A URL where nothing listens fails with ConnectionError, again on the next call."""
    nowhere = Client(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(ConnectionError):
            await nowhere.call("PING")
        with pytest.raises(ConnectionError):
            await nowhere.call("PING")
    finally:
        nowhere.close()


async def test_killed_connection_fails_in_flight_batch_then_reconnects(
    client: Client, admin: redis.Redis
) -> None:
    """After CLIENT KILL the batch in flight fails with ConnectionError; a next call reconnects."""
    key = unique("killed")
    old_id = await client.call("CLIENT", "ID")
    in_flight = asyncio.ensure_future(client.execute(("BLPOP", key, 0)))
    await asyncio.sleep(0)  # the BLPOP is written and blocks on the server

    async def blocked() -> bool:
        clients = await admin.client_list(client_type="normal")
        return any(int(c["id"]) == old_id and c["cmd"] == "blpop" for c in clients)

    await eventually(blocked, within=WAIT)
    assert await admin.execute_command("CLIENT", "KILL", "ID", old_id) == 1
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(in_flight, WAIT)
    new_id = await client.call("CLIENT", "ID")
    assert new_id != old_id
    assert await client.execute(("SET", key, "v"), ("GET", key), ("DEL", key)) == [b"OK", b"v", 1]


async def test_killed_idle_connection_is_replaced_by_a_later_call(
    client: Client, admin: redis.Redis
) -> None:
    """After CLIENT KILL of an idle connection, a later call succeeds on a new connection."""
    old_id = await client.call("CLIENT", "ID")
    assert await admin.execute_command("CLIENT", "KILL", "ID", old_id) == 1
    # The next call may race the close (and fail with ConnectionError); one after it must work.
    try:
        new_id = await client.call("CLIENT", "ID")
    except ConnectionError:
        new_id = await client.call("CLIENT", "ID")
    assert new_id != old_id
    assert await client.call("PING") == b"PONG"


async def test_watchdog_times_out_a_blocked_batch_and_the_client_recovers(
    stores: Stores,
) -> None:
    """A reply later than the timeout fails with TimeoutError; the next call on the client works."""
    slow = Client(stores.redis_url, timeout=0.3)
    key = unique("blocked")
    try:
        assert await slow.call("PING") == b"PONG"
        other = asyncio.ensure_future(slow.execute(("PING",)))
        with pytest.raises(RedisTimeoutError):
            await slow.call("BLPOP", key, 5)
        with pytest.raises(RedisTimeoutError):  # queued behind it: failed with it, not lost
            await other
        assert await slow.execute(("SET", key, "v"), ("GET", key), ("DEL", key)) == [
            b"OK",
            b"v",
            1,
        ]
    finally:
        slow.close()


async def test_an_empty_batch_answers_at_once_and_disturbs_no_other(stores: Stores) -> None:
    """`execute()` with no commands returns no replies, and a batch after it gets its own."""
    lean = Client(stores.redis_url, timeout=0.3)
    try:
        empty, pong = await asyncio.gather(lean.execute(), lean.execute(("PING",)))
        assert (empty, pong) == ([], [b"PONG"])
    finally:
        lean.close()


async def test_subscription_delivers_messages_from_each_channel(stores: Stores) -> None:
    """Messages published to each subscribed channel reach `on_message` with their channel."""
    channels = [unique("chan-a"), unique("chan-b")]
    received: list[tuple[bytes, bytes]] = []
    both = asyncio.Event()

    def on_message(channel: bytes, data: bytes) -> None:
        received.append((channel, data))
        if len(received) == 2:
            both.set()

    subscription = Subscription(stores.redis_url)
    publisher = Client(stores.redis_url)
    try:
        lost = await subscription.open(channels, on_message)
        replies = await publisher.execute(
            ("PUBLISH", channels[0], b"one\r\n\x00"), ("PUBLISH", channels[1], "twö")
        )
        assert replies == [1, 1]
        await asyncio.wait_for(both.wait(), WAIT)
        assert received == [
            (channels[0].encode(), b"one\r\n\x00"),
            (channels[1].encode(), "twö".encode()),
        ]
        assert not lost.done()
    finally:
        subscription.close()
        publisher.close()


async def test_subscription_future_completes_on_client_kill(valkey: Valkey) -> None:
    """CLIENT KILL TYPE pubsub completes the future that `open` returned, and a new one works."""
    await valkey.wait_ready()
    channel = unique("killed")
    got = asyncio.Event()
    subscription = Subscription(valkey.url)
    publisher = Client(valkey.url)
    try:
        lost = await subscription.open([channel], lambda _channel, _data: got.set())
        assert not lost.done()
        assert await publisher.call("CLIENT", "KILL", "TYPE", "pubsub") == 1
        await asyncio.wait_for(lost, WAIT)
        assert await publisher.call("PUBLISH", channel, "after") == 0

        lost = await subscription.open([channel], lambda _channel, _data: got.set())
        assert await publisher.call("PUBLISH", channel, "again") == 1
        await asyncio.wait_for(got.wait(), WAIT)
        assert not lost.done()
    finally:
        subscription.close()
        publisher.close()


async def test_subscription_future_completes_when_valkey_stops(valkey: Valkey) -> None:
    """Stopping the server completes the subscription's future, and reopening it then fails."""
    await valkey.wait_ready()
    subscription = Subscription(valkey.url, timeout=1.0)
    publisher = Client(valkey.url, timeout=1.0)
    try:
        lost = await subscription.open([unique("stopped")], lambda _channel, _data: None)
        assert await publisher.call("PING") == b"PONG"
        await valkey.stop_keeping_data()
        await asyncio.wait_for(lost, WAIT)
        with pytest.raises(ConnectionError):
            await subscription.open([unique("stopped")], lambda _channel, _data: None)
        with pytest.raises(ConnectionError):
            await publisher.call("PING")
    finally:
        subscription.close()
        publisher.close()
