"""RankDB's API: ranked lists and their elements (``routes.py``), backups and restores
(``backups.py``), and what both share (``common.py``: goa's error bodies, cross-list selection).
"""
