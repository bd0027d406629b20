"""Serving pointspace, apart from what it serves: the ``pointspace`` command (``cli.py``), one
trio run of the engine and Hypercorn (``server.py``), the settings record (``settings.py``) and
where its values come from (``config.py``), and log formatting (``logs.py``).
"""
