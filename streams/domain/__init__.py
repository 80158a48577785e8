"""The pure logic of the worker: validation and normalisation (``ingest``,
``identifiers``), duplicates (``dedup``), stitching (``identity``, ``stitching``), the
journey, effort and scores, and the alerts they raise.

Nothing here imports Faust or does I/O, and nothing here imports the rest of
``streams``: rows and values in, rows and values out.
"""

__all__: list[str] = []
