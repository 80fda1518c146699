"""Serve's request router for lipstream replicas: each request goes to the replica with the
fewest open WebSockets (sessions, and sockets about to become one).

Serve's default router (power of two choices on cached queue lengths) can place several
handshakes that arrive together on one replica: each routing task may probe both replicas,
read the same lengths and pick the same one. This router counts, synchronously, the requests it
has chosen a replica for and not yet seen end, so concurrent handshakes see each other's
choices. With several proxies (one per node), each router sees only its own requests, so the
replicas' own counts (`record_routing_stats`: `sockets`, every ROUTING_STATS_PERIOD_S) are the
floor. Replicas are returned one per rank, fewest first: Serve tries the next only if a
replica is at `max_ongoing_requests`.
"""

from __future__ import annotations

import random
import time
from collections import Counter

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

ROUTING_STATS_PERIOD_S = 1.0  # how often Serve asks each replica for its open sockets
RESERVATION_TTL_S = 5.0  # a choice not followed by a send (the request went elsewhere) is forgotten after this
SOCKETS_STAT = "sockets"  # the routing stat a replica reports: its open WebSockets


class FewestSessionsRouter(RequestRouter):
    """Ranks replicas by open sockets: max(the replica's own count, this router's sent + chosen)."""

    def initialize_state(self, **kwargs) -> None:
        self._sent: Counter[ReplicaID] = Counter()  # requests sent and not yet completed
        self._chosen: dict[str, tuple[ReplicaID, float]] = {}  # request id -> (replica, monotonic s) awaiting send

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        ranked = rank_replicas(candidate_replicas, self.local_load(time.monotonic()))
        if pending_request is not None:
            self._chosen[pending_request.metadata.internal_request_id] = (ranked[0].replica_id, time.monotonic())
        return [[replica] for replica in ranked]

    def local_load(self, now: float) -> Counter:
        """Requests per replica this router has sent (still open) or chosen (not yet sent)."""
        for key, (_, at) in list(self._chosen.items()):
            if now - at > RESERVATION_TTL_S:
                del self._chosen[key]
        load = Counter(self._sent)
        load.update(replica for replica, _ in self._chosen.values())
        return load

    def on_send_request(self, replica_id: ReplicaID) -> None:
        super().on_send_request(replica_id)
        self._sent[replica_id] += 1
        # The send doesn't say which request it is: it settles the oldest choice of this replica.
        mine = [(at, key) for key, (chosen, at) in self._chosen.items() if chosen == replica_id]
        if mine:
            del self._chosen[min(mine)[1]]

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        super().on_request_completed(replica_id, internal_request_id)
        self._chosen.pop(internal_request_id, None)
        if self._sent[replica_id] > 0:
            self._sent[replica_id] -= 1

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._sent.pop(replica_id, None)


def rank_replicas(replicas: list, local_load: Counter) -> list:
    """Replicas ordered by open sockets, fewest first (ties in random order): each replica's
    count is the larger of what it reported (`routing_stats["sockets"]`) and `local_load`."""
    def sockets(replica) -> int:
        reported = (replica.routing_stats or {}).get(SOCKETS_STAT, 0)
        return max(int(reported), local_load.get(replica.replica_id, 0))

    return sorted(replicas, key=lambda replica: (sockets(replica), random.random()))
