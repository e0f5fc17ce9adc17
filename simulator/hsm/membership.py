"""What an HSM knows of its cluster's members: the answer to ``cluster.members``.

On the real service the HSMs of a cluster notify the client when an HSM is added
(spec §2.6), so a client bootstrapped from one address reaches them all. Here the
cluster (:class:`simulator.cluster.LocalCluster`) hands every HSM a fresh
:class:`Membership` whenever membership or an HSM's availability changes.

Membership is runtime information of the cluster, not HSM state: it is never
stored, backed up or carried in a snapshot. A :class:`Membership` is immutable, so
the cluster's event loop can swap it in while the HSM's worker thread reads the
previous one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MemberAddress:
    """One HSM of the cluster and where its server host listens."""

    hsm_id: str
    hostname: str
    port: int
    state: str

    def as_result(self) -> dict[str, Any]:
        return {
            "hsm_id": self.hsm_id,
            "hostname": self.hostname,
            "port": self.port,
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class Membership:
    """The members of one cluster, as the cluster last announced them."""

    cluster_id: str
    members: tuple[MemberAddress, ...]

    @classmethod
    def of(cls, cluster_id: str, members: Iterable[MemberAddress]) -> Membership:
        return cls(cluster_id, tuple(members))

    @classmethod
    def unknown(cls, cluster_id: str) -> Membership:
        """An HSM no cluster has told anything yet (a standalone HSM): no members known."""
        return cls(cluster_id, ())

    def as_result(self) -> dict[str, Any]:
        """The ``cluster.members`` result."""
        return {
            "cluster_id": self.cluster_id,
            "hsms": [member.as_result() for member in self.members],
        }
