"""The native API under ``/api/``: what pointspace offers beyond any seed.

``routes.py`` (events, queries, breakdowns, counters, leaderboards), ``admin.py`` (snapshots on
demand, the live export), ``models.py`` (every request and response shape, declared once as
msgspec structs: they validate bodies and query strings and build ``/openapi.json``).
"""
