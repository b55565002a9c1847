"""Chaos: orderflow as real processes under injected faults, checked where the world sees it.

`cluster` starts and stops the processes (simulators, mail sink, `serve`, workers), `probes`
reads what the kernel knows of them (memory, database connections, log volume), `checks` turns
what was observed into figures and verdicts (pure), and `run` is the scenario behind
`orderflow chaos`.
"""
