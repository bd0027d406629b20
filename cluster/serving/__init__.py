"""A cluster node serving the HTTP API: the web app of a single node over an engine that
routes each call to the partitions' owners (``routing.py``), the node-to-node forwarding
routes (``forwarding.py``, ``wire.py``), and the process that runs it all (``serve.py``).

The only part of ``cluster/`` that imports ``web/``; the rest is the cluster's core.
"""
