"""Rate limits and credits, answered at introspection (SPEC "Rate limits and credits").

An API key and a client may carry `Limits` (introspect/store/records.py):
up to 4 windows and a credit balance. Each active answer of /introspect for
a credential they apply to (the key's own, its client's) spends `cost` uses
from every one; an exhausted one makes the answer `{"active": false}`.
The decision is `Meter` (meter.py), the pure parts `policy.py`.

Why each is kept where it is:

- Credits are exact, so their balance is Postgres state (promise 1), never
  Redis's: Redis may lose acknowledged writes (promise 6), and a balance
  restored from an old snapshot would hand out credits twice. A worker
  takes a lease, a block of credits, with one transaction on the account
  row (store/credits.py), and spends it from memory: no store round trip
  per use. Blocks are 1/16 of the balance, so the last credits go one by
  one. A lease row names its holder; the worker deletes it when it returns
  the unspent rest (idle 5 s, on shutdown, or when it renews). A worker
  killed while holding a lease leaves its row: its credits are neither
  handed out again nor silently dropped; the admin read reports them as
  `credits.lost` once the lease has expired (up to that many may have been
  used). Refill happens under the account's row lock, when the interval
  number moves past the row's `period`: once per interval, whichever
  instance comes first.
- Windows allow a bounded over-admission, so their counters are Redis
  keys (one per window and owner, hash-tagged by the owner): a worker takes
  a block of about 1/8 of the uses still free with one script and spends it
  from memory. While Redis keeps its writes, no window admits more than its
  limit. A Redis that lost its counters (a restart from an old snapshot, a
  flush) may admit up to one more limit in the window it happened; a Redis
  that is down lets each worker grant itself 1/`workers` of the limit once
  per window (so an instance admits at most about one limit per window,
  and N instances at most N limits), counted in
  `introspect_limit_unreconciled_uses_total`.
"""

from introspect.limits.meter import Meter, Metered
from introspect.limits.policy import cost

__all__ = ["Meter", "Metered", "cost"]
