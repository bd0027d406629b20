"""Persistence for pointspace: the write-ahead log and snapshot files.

Layers, pure first (STYLE.md, "For pointspace", point 11):

* ``framing``: log record bytes, and a sans-IO decoder that tells torn tails from corruption.
* ``codec``: snapshot bytes (msgpack items in zstd frames), encoder and validating decoder.
* ``files``: the file layer every I/O goes through, and a fault injector for tests.
* ``logscan``: reading, checking, recovering and repairing log segments.
* ``wal``: the write-ahead log, implementing ``engine.journal.Journal`` (re-exports ``logscan``).
* ``writer``: writing, pruning and finding snapshot files.

``FORMAT.md`` documents both file formats byte by byte. ``engine/`` never imports this package.
"""
