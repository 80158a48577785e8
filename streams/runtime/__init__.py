"""The Faust worker: ``app`` composes it from the settings, ``agents`` shows the flow,
``worker`` holds what the agents share; batching, state, topics, lifecycle, metrics,
the web pages and health, lag and the ledger check around them.

Imports the domain and the settings, never the commands.
"""

__all__: list[str] = []
