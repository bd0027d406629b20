"""The native API under ``/api/``: what pointspace offers beyond any seed.

One routes module per family, each with its msgspec models (they validate bodies and query
strings and build ``/openapi.json``): ``routes.py`` + ``models.py`` (events, queries,
breakdowns, counters, leaderboards, ``/api/apis``), ``uniques.py`` + ``unique_models.py``
(unique counts), ``stats.py`` + ``stats_models.py`` (statshub roll-ups as series),
``density.py`` + ``density_models.py`` (sensors, placements, spaces, occupancy), and
``admin.py`` (snapshots on demand, the live export). A module declaring ``SEED = "pointspace"``
is documented in full (``web/openapi.py``).
"""
