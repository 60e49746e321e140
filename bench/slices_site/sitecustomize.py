"""Loaded first by every process of a server started by `python -m bench --slices` (see
bench/slices.py): records the event loop's slices when SLICES_ENV names a folder."""

import os

if os.environ.get("INTROSPECT_BENCH_SLICES"):
    from bench.slices import install

    install(os.environ["INTROSPECT_BENCH_SLICES"])
