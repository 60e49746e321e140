"""`python -m bench.drills [NAME ...]`: run every drill, or the named ones."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import bench.drills


def available() -> list[str]:
    """The names of the drill modules in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(bench.drills.__path__) if m.name[0] != "_")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the drills; exit 0 when every one passed."""
    names = available()
    p = argparse.ArgumentParser(prog="python -m bench.drills", description=__doc__)
    p.add_argument("drills", nargs="*", help=f"drills to run (all): {', '.join(names)}")
    args = p.parse_args(argv)
    chosen = args.drills or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        p.error(f"unknown drill(s): {', '.join(unknown)}")
    failed = []
    for name in chosen:
        module = importlib.import_module(f"bench.drills.{name}")
        print(f"--- drill {name}", flush=True)
        if not module.run():
            failed.append(name)
    print(f"drills: {len(chosen) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
