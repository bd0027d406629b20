"""The seed systems' own HTTP APIs, each at the seed's own paths, so its clients switch by URL.

One module (or package) per seed; each speaks the seed's bodies and error shapes, declares
``SEED`` (``GET /api/apis`` lists the served paths from the url map by it) and calls the same
engine as the native API (``web/api/``):

==========================  =======================================================
seed                        paths
==========================  =======================================================
PSD (``psd.py``)            ``/health/ping``, ``/v1/write``, ``/v1/query/...``,
                            ``/v1/query_ids``, ``/v1/mu_query``, ``/v1/mumt_query``,
                            ``/v2/mumt_query``, ``/v1/readcount...``, ``/v1/batch``
RankDB (``rankdb/``)        ``/lists...``, ``/xlist/...``, ``/jwt``, ``/``, ``/health``;
                            backups: ``/xlist/backup``, ``/xlist/restore``, ``/backup/{id}``
Narrative (``narrative.py``)  ``/analytics``
statshub (``statshub.py``)  ``/stats/<id>``, ``/stats/<dim>``, ``/stats/``, the websocket
                            ``/stream/<dim>/<value|*>/<counter|gauge>/<stat>``
Density (``density.py``)    ``/send``, ``/send/batch``, ``/count``
==========================  =======================================================

The compatibility notes behind each choice are in ``shared/compat/<seed>.md``.
"""
