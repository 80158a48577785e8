"""The operator's commands: run the worker, migrate, erase, verify, check a running
deployment (``status``), replay dead letters, write the analysts' report.

Imports the runtime, the domain, the settings and the shared command-line helpers
(``streams.console``).
"""

__all__: list[str] = []
