"""Drills: real faults against a real server on loopback, each ending in a verdict line.

`make drills` (or `python -m bench.drills [NAME ...]`) runs every drill, or
the named ones. A drill is a module of this package with a `run() -> bool`
function: it starts what it needs (the server, embedded stores, load),
injects its fault, bounded in time, prints its figures and one line
`VERDICT <name>: PASS|FAIL <what was seen>`, and returns whether it passed.
Each drill's fault also has a short test in `make test`.
"""
