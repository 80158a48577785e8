"""Tooling around the worker: process control and the fault suite.

Nothing here is imported by the worker itself; the ``touchpoint`` command loads it for
the commands that orchestrate processes.
"""

__all__: list[str] = []
