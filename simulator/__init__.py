"""The simulated CloudHSM: PKI, software HSMs, server hosts, clusters, faults."""

from simulator.errors import SimulatorError

__all__ = ["SimulatorError"]
