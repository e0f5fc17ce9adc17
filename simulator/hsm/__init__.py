"""One software HSM: users, keys, policies, quorum tokens, audit log, own store.

The public surface is :class:`Hsm` (sans-IO: request in, response out),
:class:`HsmIdentity` and :class:`MtlsPolicy`; see docs/architecture.md and docs/hsm.md.
"""

from simulator.hsm.core import Hsm
from simulator.hsm.identity import HsmIdentity
from simulator.hsm.policy import MtlsPolicy

__all__ = ["Hsm", "HsmIdentity", "MtlsPolicy"]
