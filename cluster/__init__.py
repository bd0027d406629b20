"""Several ``pointspace serve`` nodes serving one data set: the parts that span machines.

The distributed parts come from NATS JetStream (Raft-replicated streams, key-value buckets with
compare-and-set), not from a protocol of our own; nats-py speaks asyncio, so every call into it
crosses one bridge (``bridge.py``). Nothing here is imported by a server started without
``--cluster``: a plain single-node server needs neither nats-py nor a NATS server.

- ``bridge.py``        one asyncio loop in a thread, called from trio (cancellation included)
- ``nats_servers.py``  a JetStream cluster of ``nats-server`` processes on loopback (tests,
                       benchmarks, trying a cluster on one machine)
- ``partition_log.py`` each partition's records on a JetStream subject: append with fencing
                       and de-duplication, read from a sequence
"""
