"""The load tool: how fast is introspect here, and where does the time go.

`make bench` or `python -m bench [--quick]`: see `python -m bench --help`
and the Benchmarks section of README.md.
"""
