"""Fixtures for the cluster's parts: a real three-server JetStream cluster on loopback
(``cluster/nats_servers.py``), a bridge, and a connection to the cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from cluster.bridge import AsyncioBridge
from cluster.nats_servers import LocalNatsCluster
from cluster.partition_log import JetStream


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNatsCluster]:
    with LocalNatsCluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


@pytest.fixture
async def bridge() -> AsyncIterator[AsyncioBridge]:
    async with AsyncioBridge.open() as b:
        yield b


@pytest.fixture
async def jetstream(bridge: AsyncioBridge, nats_cluster: LocalNatsCluster) -> AsyncIterator[JetStream]:
    async with JetStream.connect(bridge, nats_cluster.urls) as js:
        yield js
