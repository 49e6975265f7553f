"""Redis spread over several servers: the presence store on a real Redis Cluster, and the channel
layer sharded over standalone servers (channels-redis cannot use a cluster).

The whole store contract also runs on the cluster (``store_factory``'s ``redis-cluster``
param); these tests prove that the cluster really is one (keys on several nodes, cross-slot
scripts refused) and cover what only a cluster has: nodes restarting on their own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest

from presence.store.base import Reader
from tests.conftest import CI
from tests.support.cluster import ServerMissing, Servers
from tests.support.servers import ROOT

pytestmark = [pytest.mark.redis]

TTL = 1_000


def reader(rid: str, position: float | None = 0.5, at: int = 1_000) -> Reader:
    return Reader(id=rid, name=None, position=position, joined_at=at, updated_at=at)


@pytest.fixture
async def cluster_store(redis_cluster_url):
    """``make(proc)`` -> a cluster store under a prefix of this test's own, closed afterwards."""
    from presence.store.redis import RedisStore

    prefix = f"presence-test-{uuid.uuid4().hex[:12]}"
    made: list[RedisStore] = []

    def make(proc: str) -> RedisStore:
        made.append(RedisStore(proc, url=redis_cluster_url, prefix=prefix, cluster=True))
        return made[-1]

    yield make
    for store in made:
        await store.close()


async def _nodes(store) -> dict[str, object]:
    """Plain clients of every primary of the store's cluster, by node name."""
    import redis.asyncio as aredis

    client = store._client()
    await client.initialize()
    return {
        node.name: aredis.Redis(host=node.host, port=node.port, decode_responses=True)
        for node in client.get_primaries()
    }


async def test_the_store_spreads_rooms_over_the_nodes_and_keeps_each_room_in_one_slot(cluster_store):
    from redis.cluster import key_slot

    a, b = cluster_store("A"), cluster_store("B")
    rooms = [f"art:{i}" for i in range(12)]
    try:
        for i, room in enumerate(rooms):
            await a.join(room, reader(f"r{i}"))
            await b.join(room, reader(f"s{i}"))
        await a.heartbeat(0, TTL, [], [(room, reader(f"r{i}")) for i, room in enumerate(rooms)])
        assert await a.ranking(3) == [("art:0", 2), ("art:1", 2), ("art:10", 2)]

        nodes = await _nodes(a)
        assert len(nodes) == 3, "a three-master cluster"
        where: dict[str, set[str]] = {}  # key -> nodes holding it
        for name, node in nodes.items():
            async for key in node.scan_iter(match=f"{a.prefix}:*", count=1000):
                where.setdefault(key, set()).add(name)
            await node.aclose()
        assert all(len(held) == 1 for held in where.values())
        room_nodes = set()
        for room in rooms:
            keys = [k for k in where if f"{{{room}}}" in k]
            assert len(keys) >= 6, keys  # n d t h v, claims and fences of A and B
            assert len({key_slot(k.encode()) for k in keys}) == 1, f"{room}: one slot"
            room_nodes |= {name for k in keys for name in where[k]}
        assert len(room_nodes) > 1, "rooms land on several nodes"
        site = [k for k in where if ":{g}:" in k]
        assert len({key_slot(k.encode()) for k in site}) == 1
    finally:
        await a.close()
        await b.close()


async def test_the_cluster_refuses_a_script_across_slots(cluster_store):
    """What the store avoids (one room and the site-wide keys in one script) fails here, so
    the store tests on this cluster cannot pass by running on one node by accident."""
    from redis.exceptions import RedisClusterException, ResponseError

    store = cluster_store("A")
    try:
        room_key, site_key = store._room("art:1")[0], store._index("A")
        nodes = await _nodes(store)
        for node in nodes.values():
            with pytest.raises(ResponseError, match="hash to the same slot"):  # CROSSSLOT
                await node.eval("return redis.call('HLEN', KEYS[1])", 2, room_key, site_key)
            await node.aclose()
        with pytest.raises(RedisClusterException, match="same key slot"):
            await store._client().eval("return 1", 2, room_key, site_key)
    finally:
        await store.close()


async def test_the_store_carries_on_when_a_node_restarts_empty(redis_cluster, cluster_store):
    """A restarted node has dropped its connections, its scripts (NOSCRIPT) and its data: calls
    go on, and the next heartbeat puts back what the node held."""
    if redis_cluster is None:
        pytest.skip("restarts only the throwaway cluster, not REDIS_CLUSTER_URL")
    a = cluster_store("A")
    rooms = [(f"art:{i}", reader(f"r{i}", i / 10)) for i in range(8)]
    try:
        await a.claim_online("r0")
        assert await a.heartbeat(0, TTL, ["r0"], rooms) == []
        before = (await a.counts([r for r, _ in rooms]), await a.ranking(10), await a.online())
        assert before[0] == {room: 1 for room, _ in rooms}

        # Restart the node holding the site-wide slot: the ranking and index are lost there.
        client = a._client()
        site = client.get_node_from_key(a._rank)
        index = next(i for i, port in enumerate(redis_cluster.ports) if port == site.port)
        redis_cluster.restart(index)

        assert await a.online() == 0, "the restarted node lost the online hash"
        assert await a.heartbeat(100, TTL, ["r0"], rooms) == []
        assert (await a.counts([r for r, _ in rooms]), await a.ranking(10), await a.online()) == before
        state = await a.room_state("art:3")
        assert [r.id for r in state.readers] == ["r3"]

        # Another node (holding rooms only) restarts too: its rooms come back with the heartbeat.
        other = next(i for i, port in enumerate(redis_cluster.ports) if port != site.port)
        redis_cluster.restart(other)
        assert await a.heartbeat(200, TTL, ["r0"], rooms) == []
        assert (await a.counts([r for r, _ in rooms]), await a.ranking(10), await a.online()) == before
        assert await a.leave("art:3", "r3") is True
        assert await a.counts(["art:3"]) == {"art:3": 0}
        assert ("art:3", 1) not in await a.ranking(10)
    finally:
        await a.close()


async def test_the_reaper_works_across_nodes(cluster_store):
    a, b = cluster_store("A"), cluster_store("B")
    rooms = [(f"art:{i}", reader(f"b{i}")) for i in range(6)]
    try:
        await b.heartbeat(0, TTL, ["b0"], rooms)
        await a.heartbeat(0, TTL, [], [("art:0", reader("b0"))])
        assert sorted(await a.heartbeat(1_500, TTL, [], [("art:0", reader("b0"))])) == [
            (f"art:{i}", f"b{i}") for i in range(1, 6)
        ]
        assert await a.ranking(10) == [("art:0", 1)]
        assert await a.online() == 0
        assert await a._client().hlen(a._index("B")) == 0, "B's index is gone with B"
    finally:
        await a.close()
        await b.close()


# -- the channel layer, sharded over standalone servers ----------------------------------------


@pytest.fixture(scope="module")
def two_servers():
    try:
        servers = Servers(2)
    except ServerMissing as missing:
        if CI:
            pytest.fail(str(missing))
        pytest.skip(str(missing))
    yield servers
    servers.stop()


async def test_the_channel_layer_shards_channels_and_groups_over_two_servers(two_servers):
    import redis.asyncio as aredis
    from channels_redis.core import RedisChannelLayer

    prefix = f"presence-test-layer-{uuid.uuid4().hex[:8]}"
    hosts = [{"address": url, "socket_timeout": None} for url in two_servers.urls]
    one, two = RedisChannelLayer(hosts=hosts, prefix=prefix), RedisChannelLayer(hosts=hosts, prefix=prefix)
    try:
        mine, theirs = await one.new_channel(), await two.new_channel()
        await one.group_add("readers", mine)
        await two.group_add("readers", theirs)
        await one.group_send("readers", {"type": "room.update", "n": 1})
        for layer, channel in ((one, mine), (two, theirs)):
            assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "room.update", "n": 1}

        # Plain channels are hashed over the hosts: both servers get some.
        names = [f"presence-hub.{i}" for i in range(16)]
        for name in names:
            await one.send(name, {"type": "ping", "to": name})
        held = []
        for url in two_servers.urls:
            probe = aredis.Redis.from_url(url, decode_responses=True)
            held.append([k async for k in probe.scan_iter(match=f"{prefix}*presence-hub.*")])
            await probe.aclose()
        assert all(held), held
        assert sum(len(keys) for keys in held) == len(names)
        for name in names:
            assert (await asyncio.wait_for(two.receive(name), 5))["to"] == name
    finally:
        await one.flush()
        await two.flush()


def test_settings_shard_the_layer_and_put_the_store_on_the_cluster():
    """``REDIS_CLUSTER`` and ``CHANNEL_REDIS_URLS`` as the demo site reads them."""
    code = (
        "from presence_site import settings as s;"
        "print([h['address'] for h in s.CHANNEL_LAYERS['default']['CONFIG']['hosts']],"
        " s.PRESENCE_REDIS_URL, s.PRESENCE_REDIS_CLUSTER, s.CACHES['default']['LOCATION'])"
    )
    env = {
        **os.environ,
        "REDIS_URL": "redis://10.0.0.1:7000/0",
        "REDIS_CLUSTER": "1",
        "CHANNEL_REDIS_URLS": "redis://10.0.0.2:6379/0, redis://10.0.0.3:6379/0",
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "['redis://10.0.0.2:6379/0',",
        "'redis://10.0.0.3:6379/0']",
        "redis://10.0.0.1:7000/0",
        "True",
        "redis://10.0.0.2:6379/0",
    ]

    env.pop("CHANNEL_REDIS_URLS")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "CHANNEL_REDIS_URLS" in done.stderr
