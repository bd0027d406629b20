"""Server settings: one frozen record that the CLI fills and every layer reads.

Defaults are what ``pointspace serve`` uses with no flags. Limits carry their precedents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
#: PSD's own default bind address was 127.0.0.1:1155; PSD clients keep working unchanged.
DEFAULT_PORT = 1155
DEFAULT_DATA_DIR = Path("pointspace-data")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: ``None`` keeps everything in memory (nothing survives a restart).
    data_dir: Path | None = DEFAULT_DATA_DIR
    #: Write-ahead log fsync policy, as Redis's appendfsync: always, everysec or no.
    fsync: str = "everysec"
    #: Request body limit. 32 MiB holds a batch of 100k events in JSON with room to spare
    #: (nginx defaults to 1 MiB, Quart to 16 MiB; batch ingest is our main lever, so higher).
    max_body_bytes: int = 32 * 1024 * 1024
    #: Seconds to receive a whole body / produce a whole response (Quart's defaults: 60).
    body_timeout_s: float = 60.0
    response_timeout_s: float = 60.0
    #: Events per group in NDJSON streaming ingest: each group is validated whole and applied
    #: as one command; a bad line stops the stream after the groups before it.
    stream_group_events: int = 5000
    #: A stream may be far longer than one body: 1 GiB before it is cut off.
    max_stream_bytes: int = 1024 * 1024 * 1024
    #: Hypercorn's access log (one line per request): off by default, it costs per request.
    access_log: bool = False
    #: Server logs as JSON lines ("json") or plain text ("text").
    log_format: str = "json"
    #: A directory of ``*.pub`` RSA public keys: when set, every route but health and metrics
    #: needs a JWT signed by one of them (RankDB's scheme; ``web/auth.py``).
    jwt_key_dir: Path | None = None
    #: Seconds to keep each resolution ("second" .. "month"); empty keeps everything.
    retention: dict[str, int] = field(default_factory=dict)

    # ----- unique counts (engine/uniques.py) ---------------------------------------------------

    #: Resolutions a new unique series keeps, finest first.
    unique_levels: tuple[str, ...] = ("minute", "hour", "day", "month", "year")
    #: Members a bucket holds exactly before it becomes a HyperLogLog sketch (Elasticsearch's
    #: cardinality aggregation switches at 3000 too); -1 keeps every bucket exact.
    unique_exact_limit: int = 3000
    #: HyperLogLog precision: 14 gives 0.81% standard error in 8 KB (HLL_4).
    unique_lg_k: int = 14
    #: Seconds to keep each unique resolution; empty keeps everything.
    unique_retention: dict[str, int] = field(default_factory=dict)

    # ----- statshub (engine/stats.py, web/compat/statshub.py) -------------------------------

    #: A gauge keeps each id's last value per period of this many seconds (statshub: 6 min).
    stats_gauge_period_s: int = 360
    #: Seconds between updates on a statshub ``/stream/...`` websocket (statshub: 30).
    stats_stream_interval_s: float = 30.0

    # ----- security limits (README "Security"); each default is the safe one -----------------

    #: Where RankDB ``file`` backups are written and ``src_file`` restores read: destinations
    #: and sources are plain file names inside it, never paths. ``None``: ``<data_dir>/backups``
    #: (a memory-only server then has no file backups until this is set).
    backup_dir: Path | None = None
    #: Hosts (``host`` or ``host:port``) a ``server`` backup destination may name. Empty: none,
    #: so a request cannot make this server call arbitrary addresses (SSRF).
    backup_allowed_hosts: tuple[str, ...] = ()
    #: Bytes a restore or snapshot import may inflate to, in all. The stream limit above counts
    #: compressed bytes; zstd reaches ratios of 30,000:1, so the output needs its own bound.
    max_inflated_bytes: int = 8 * 1024 * 1024 * 1024
    #: A request body must keep arriving at this many bytes per second, measured over
    #: ``body_rate_window_s`` (slowloris; nginx's send/receive timeouts play the same role).
    min_body_rate_bytes_s: int = 1024
    body_rate_window_s: float = 10.0
    #: Seconds a request's headers may take from their first byte to their end (slowloris:
    #: a client that sends partial headers and stops holds a connection slot until then).
    #: Apache's mod_reqtimeout gives 20-40 s; nginx's client_header_timeout 60 s.
    header_timeout_s: float = 20.0
    #: Open client connections at once; more wait in the kernel's accept queue.
    max_connections: int = 1000
    #: Host header values (names, with or without a port) accepted. Empty: the loopback names
    #: when bound to a loopback address (DNS rebinding), anything otherwise.
    allowed_hosts: tuple[str, ...] = ()
    #: Browser origins (``https://dash.example.com``) allowed besides this server's own. A
    #: request carrying any other ``Origin`` is refused, so a web page cannot drive the server.
    allowed_origins: tuple[str, ...] = ()

    # ----- a cluster node (cluster/, the [cluster] extra; README "Running a cluster") --------

    #: NATS server URLs of a JetStream cluster. Set: this server is one node of a pointspace
    #: cluster, its state in JetStream (``data_dir`` is not used). Empty: a single node.
    cluster: tuple[str, ...] = ()
    #: This node's id, unique in the cluster (letters, digits, ``-``, ``_``). Empty: made from
    #: the host and port.
    node_id: str = ""
    #: The URL the other nodes reach this node at. Empty: ``http://<host>:<port>``.
    advertise_url: str = ""
    #: Partitions of the data set: the same on every node, fixed when the cluster first starts.
    cluster_partitions: int = 64
    #: Copies JetStream keeps of each partition's log and of the membership buckets (at most
    #: the number of NATS servers; 3 survives the loss of one).
    cluster_replicas: int = 3
    #: Seconds after its last heartbeat that a node counts as dead and its partitions move to
    #: their standbys (it heartbeats six times per period). Failover takes about this long,
    #: twice when the dead node was the coordinator.
    cluster_ttl_s: float = 3.0
    #: Seconds between an owner's snapshots of each partition it writes (to the JetStream
    #: object store; the log before the previous one is then cut).
    cluster_snapshot_interval_s: float = 30.0
