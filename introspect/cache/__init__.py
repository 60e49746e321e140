"""Three layers, one truth: the in-process cache, the Redis cache, and their invalidation.

An introspection answer is looked up by the keyed hash of the credential:
first in this worker's in-process cache, then in Redis, then in Postgres.
Every change commits in Postgres, then overwrites Redis, then PUBLISHes one
invalidation message that every worker of every instance applies to its
in-process cache and acknowledges; the change call returns once every
listener has acknowledged (or after a short bound, saying how many did).

Why no interleaving can leave an old state cached
-------------------------------------------------
Every change to a credential takes a fresh, larger `version` from one
Postgres sequence, in the transaction that makes the change. A Redis entry
is `<version>|<payload>`, where the payload is an answer or `T`, a
tombstone meaning "changed: read Postgres again". All Redis writes are
versioned writes of the Redis port (`introspect.redis.port.Write`; on one
server, the script `_FILL` of introspect/redis/lean.py), which write only when
the key is absent, or holds a smaller version, or holds a tombstone of the
same version.

* A writer, after its commit, writes a tombstone with the new version v.
  Any entry an earlier reader filled carries a version < v, so the
  tombstone replaces it; a later reader that read Postgres after the commit
  carries v and replaces the tombstone with the new state; a reader that
  read Postgres before the commit carries a version < v and is refused.
* Two writers may reach Redis in either order; the larger version wins.
* A revocation's writer knows the final state, so instead of a tombstone
  it writes `<v>|0`, the inactive answer, under the same rule (and the
  listeners cache it in-process): no reader needs Postgres afterwards. A
  reader that read Postgres after the commit carries v too and the same
  state, and is refused as a duplicate.
* A tombstone lives `TOMBSTONE_TTL` seconds, and a reader abandons its fill
  when more than `FILL_DEADLINE` (far smaller) has passed since it started
  its Postgres read: so a stale reader cannot arrive after the tombstone
  expired. (The Redis socket timeout bounds how long a sent command can
  wait; the residual case is a command delayed in the kernel for minutes.)
* Entries never outlive the credential's `exp` (promise 3): the Redis TTL
  is capped by it, and every layer checks `exp` again on each hit.

The in-process layer is protected by an epoch. Every invalidation message
a worker applies increments its `LocalCache.epoch`; a read-through records
the epoch before it starts and stores its result in-process only if the
epoch is unchanged when it finishes. A message that arrived in between
could concern this key, so the result is used for this answer only.

Bulk changes (every credential of a client or of a subject) send one
message naming the client or subject. Each in-process entry remembers the
generation of its client and subject when it was filled; the message bumps
that generation, which makes every such entry stale in O(1), without a
scan. In Redis, the writer tombstones each affected key from the
`RETURNING` list of its own UPDATE, in one pipeline.

Client records
--------------
Authenticating the caller, and deciding on a credential (is its owner
disabled?), need client records: they are cached in the same three layers
under the same rules, so that a Postgres outage leaves every cached answer
answerable for its remaining Redis lifetime (promise 5). A client takes a
fresh `version` from the same sequence with every change to it or to its
secrets (creation, PATCH, deletion, rotation, access keys: whatever sets
its row or its secrets), in the change's transaction. Its Redis value is
`<version>|<record>` (`encode_client`: what authentication needs, with the
keyed hashes of its live secrets and their grace expiries, never a secret;
as sensitive as the credentials' keyed hashes, which are Redis keys
already) under `client_key`, filled by readers' versioned writes under their
marker and FILL_DEADLINE, for the Redis cache lifetime. The change's writer
tombstones it with the change's version (`Invalidation.records`), so the
change log's replay writes that tombstone again: the argument above holds
word for word. A record keeps a secret still in grace when it was read;
authentication checks each secret's expiry against the clock on every use,
so a record outliving a grace period accepts nothing expired. Unknown ids
never reach Redis (client_records.UnknownIds keeps them per worker, briefly).
In-process, a record is stored under the epoch rule and dropped by the
change's message.

The upkeep of Redis (the outbox sweep) also reads Postgres; a failure there
is Postgres's (`PostgresFailed`), never taken for a Redis failure, which
would stop the in-process and Redis layers from answering.

Hot entries are read again before they expire: an in-process entry hit in
the last part of its life (from a random point between REFRESH_FROM and
REFRESH_TO of it, so that entries filled together do not all come due
together) is read again from Redis in the background, one MGET for all that
came due in the meantime, and stored under the same epoch rule as any
read-through. A credential in constant use therefore never waits for Redis
when its in-process life ends. This holds for JWTs too: their entries were
stored after a signature check of that very string, and no signing key is
retired while a token it signed is live (see introspect/signing.py).

A change call returns once every listener acknowledged, or after
ACK_TIMEOUT at most; a worker that did not acknowledge in time stops
reading its in-process cache before then (heartbeats: see Listener).

Missed messages (promise 4): the listener runs on a connection that never
retries silently. When it fails, the in-process cache is switched off at
once; on every (re)subscription it is cleared whole before it is used
again. While Redis is unreachable, lookups go straight to Postgres, and a
change records its invalidation in the `invalidation_outbox` table in its
own transaction; the change call answers that the invalidation is pending,
and every worker replays the outbox, before it trusts Redis again.

Lost writes (promise 6): Redis may forget what it acknowledged. Reads and
readers' fills use Redis only while this worker vouches for the history of
the server it reaches (introspect/history.py: the argument is there); the
change log (the outbox, whose rows are now kept for longer than any entry
lives) is written again to a server whose history it cannot vouch for,
before any worker reads from it. Writers' tombstones need no vouching: a
newer version never restores an old state. The in-process cache is usable
only while its subscription reaches the vouched server.

Where each part is
------------------
`entry` (entries and the one codec between answers, client records and
Redis values), `local` (the in-process layer and its epoch), `readthrough`
(`CredentialCache`: the read path, and the facade the authority uses),
`invalidation` (what a change tombstones and publishes), `announce`
(publishing, acknowledgements, the outbox and change-log replays), `health`
(when Redis is used, recovery, the sweep), `listener` (subscription,
heartbeats, acknowledging), `coalescer` (one round trip for many requests).
Every Redis command goes through the port, introspect/redis/port.py.
"""

from introspect.cache.announce import ACK_TIMEOUT, Announcer, PostgresFailed
from introspect.cache.coalescer import Coalescer
from introspect.cache.entry import (
    ANSWER,
    AUD,
    CACHEABLE,
    CLIENT_ID,
    CLIENT_KEY,
    EXP,
    HEAD,
    INACTIVE_PAYLOAD,
    KEY_ID,
    KEY_PREFIX,
    LIMITS,
    NBF,
    REFRESH_AT,
    REVOKED_TTL,
    SUB,
    TOMBSTONE,
    TOMBSTONE_TTL,
    VERSION,
    Entry,
    answer_of,
    answered,
    client_key,
    decode,
    decode_client,
    encode,
    encode_client,
    inactive,
    lifetime,
    shared,
    uncacheable,
)
from introspect.cache.health import Health
from introspect.cache.invalidation import CHANNEL, Announced, Invalidation
from introspect.cache.listener import FRESHNESS, HEARTBEAT_INTERVAL, Listener
from introspect.cache.local import CLIENT_CACHE_SIZE, REFRESH_FROM, REFRESH_TO, LocalCache
from introspect.cache.readthrough import FILL_DEADLINE, CredentialCache

__all__ = [
    "ACK_TIMEOUT",
    "ANSWER",
    "AUD",
    "CACHEABLE",
    "CHANNEL",
    "CLIENT_CACHE_SIZE",
    "CLIENT_ID",
    "CLIENT_KEY",
    "EXP",
    "FILL_DEADLINE",
    "FRESHNESS",
    "HEAD",
    "HEARTBEAT_INTERVAL",
    "INACTIVE_PAYLOAD",
    "KEY_ID",
    "KEY_PREFIX",
    "LIMITS",
    "NBF",
    "REFRESH_AT",
    "REFRESH_FROM",
    "REFRESH_TO",
    "REVOKED_TTL",
    "SUB",
    "TOMBSTONE",
    "TOMBSTONE_TTL",
    "VERSION",
    "Announced",
    "Announcer",
    "Coalescer",
    "CredentialCache",
    "Entry",
    "Health",
    "Invalidation",
    "Listener",
    "LocalCache",
    "PostgresFailed",
    "answer_of",
    "answered",
    "client_key",
    "decode",
    "decode_client",
    "encode",
    "encode_client",
    "inactive",
    "lifetime",
    "shared",
    "uncacheable",
]
