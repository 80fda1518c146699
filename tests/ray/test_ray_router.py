"""The Serve request router alone (no Ray cluster): handshakes that arrive together spread over
the replicas, a replica's own count of open sockets is respected, and finished requests free
their replica."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

pytest.importorskip("ray.serve")

from ray.serve._private.common import DeploymentHandleSource, DeploymentID  # noqa: E402

from lipstream.server.ray_router import SOCKETS_STAT, FewestSessionsRouter  # noqa: E402


@dataclass
class FakeReplica:
    replica_id: str
    routing_stats: dict = field(default_factory=dict)


def request(n: int):
    return SimpleNamespace(metadata=SimpleNamespace(internal_request_id=f"r{n}"))


def make_router() -> FewestSessionsRouter:
    router = FewestSessionsRouter(DeploymentID(name="lipstream", app_name="lipstream"), DeploymentHandleSource.PROXY)
    router.initialize_state()
    return router


async def first_choices(router, replicas, count: int) -> list[str]:
    """`count` requests routed at once: each one's first choice (before any is sent)."""
    ranks = await asyncio.gather(*(router.choose_replicas(replicas, request(n)) for n in range(count)))
    return [rank[0][0].replica_id for rank in ranks]


def test_handshakes_arriving_together_split_evenly():
    router, replicas = make_router(), [FakeReplica("a"), FakeReplica("b")]
    for _ in range(20):  # ties are broken at random: every run must still split 2/2
        router.initialize_state()
        chosen = asyncio.run(first_choices(router, replicas, 4))
        assert sorted(chosen.count(r) for r in "ab") == [2, 2], chosen


def test_sent_requests_count_until_they_complete():
    router, replicas = make_router(), [FakeReplica("a"), FakeReplica("b")]

    async def scenario():
        for n in range(3):
            first = (await router.choose_replicas(replicas, request(n)))[0][0].replica_id
            router.on_send_request(first)  # settles the choice: counted once, as sent
        assert sum(router.local_load(0).values()) == 3
        busy = max("ab", key=lambda r: router.local_load(0)[r])
        router.on_request_completed(busy, "r-any")
        router.on_request_completed(busy, "r-other")
        return (await router.choose_replicas(replicas, request(9)))[0][0].replica_id, busy

    chosen, freed = asyncio.run(scenario())
    assert chosen == freed  # it had 2, now 0; the other still has 1


def test_a_replica_reporting_more_sockets_ranks_last():
    """Sockets another proxy placed there (reported by the replica) count too."""
    router = make_router()
    replicas = [FakeReplica("a", {SOCKETS_STAT: 3}), FakeReplica("b", {SOCKETS_STAT: 1}), FakeReplica("c")]
    ranks = asyncio.run(router.choose_replicas(replicas, request(0)))
    assert [rank[0].replica_id for rank in ranks] == ["c", "b", "a"]
