"""Operator endpoints under ``/api/admin``: snapshots on demand, the last one, a live export."""

from __future__ import annotations

from dataclasses import asdict

from quart import Blueprint, Response, current_app, request

from snapshots.store import SnapshotRecord
from snapshots.transfer import stream_engine_snapshot
from web.api import models as m
from web.bodies import respond
from web.context import engine_of
from web.openapi import answers

admin = Blueprint("admin", __name__, url_prefix="/api/admin")
#: The API family (``web/apis.py``): the native API.
SEED = "pointspace"
SEED_DOC = "pointspace's own API: events, sums, breakdowns, counters, leaderboards, administration."

#: Progress hints on a live export (read by ``pointspace snapshot export --url``).
ENTITIES_HEADER = "X-Pointspace-Entities"
ESTIMATE_HEADER = "X-Pointspace-Estimated-Bytes"


@admin.post("/snapshot")
@answers(SnapshotRecord)
async def take_snapshot() -> Response:
    """Write a snapshot now; answers what was written (400 for an in-memory server)."""
    record = await engine_of(current_app).snapshot_now()
    return respond(asdict(record), request)


@admin.get("/snapshot")
@answers(m.SnapshotStatus)
async def last_snapshot() -> Response:
    """The last snapshot written or loaded (``null`` before the first), and recovery figures."""
    store = engine_of(current_app).store
    if store is None:
        return respond({"last": None, "recovery": None, "data_dir": None}, request)
    last = store.last_snapshot
    return respond(
        {
            "data_dir": str(store.data_dir),
            "last": asdict(last) if last is not None else None,
            "recovery": asdict(store.recovery),
            "log": asdict(store.journal.statistics()),
        },
        request,
    )


@admin.get("/snapshot/export")
@answers(m.SnapshotStream)
async def export_snapshot() -> Response:
    """A snapshot of the live state, streamed (``pointspace snapshot export --url``).

    The size is not known before the stream ends, so there is no ``Content-Length``; for a
    client's progress, ``X-Pointspace-Entities`` says how many entities are held as it starts
    and, once a snapshot was written, ``X-Pointspace-Estimated-Bytes`` scales the last
    snapshot's size to them.
    """
    engine = engine_of(current_app)
    # The stream starts only once the answer's 200 is sent; an engine that cannot take a
    # snapshot (a cluster node's, which answers 501) must refuse before that.
    engine.stable_seq()
    response = Response(stream_engine_snapshot(engine), content_type="application/octet-stream")
    response.headers["Content-Disposition"] = 'attachment; filename="pointspace.pssnap"'
    entities = engine.statistics().router.entities
    response.headers[ENTITIES_HEADER] = str(entities)
    last = engine.store.last_snapshot if engine.store is not None else None
    if last is not None and last.items:
        response.headers[ESTIMATE_HEADER] = str(last.bytes * max(entities, 1) // last.items)
    response.timeout = None
    return response
