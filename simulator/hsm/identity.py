"""Who an HSM is: its ids, serial number, instance type and cluster mode, and what
``hsm.info`` shows.

The mode (``FIPS`` or ``NON_FIPS``) is the cluster's, fixed when the cluster is
created; an HSM keeps it so its policy checks (Ed25519 keys and ed25519ph exist in
non-FIPS mode only) and its ``fips-state`` need no call back to the cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

HSM_TYPES = ("hsm2m.medium", "hsm1.medium")
#: Cluster modes (BOTO enum ``ClusterMode``); non-FIPS exists on hsm2m.medium only.
MODES = ("FIPS", "NON_FIPS")
FIPS, NON_FIPS = MODES
#: ``fips-state`` as ``cluster hsm-info`` prints it, per mode (AWS CLI page for
#: ``cluster hsm-info``: "0 [non-FIPS mode with single factor authentication]" in non-FIPS mode).
FIPS_STATES = {
    FIPS: "2 [FIPS mode with single factor authentication]",
    NON_FIPS: "0 [non-FIPS mode with single factor authentication]",
}
_HSM_ID = re.compile(r"hsm-[2-7a-zA-Z]{11,16}")
_CLUSTER_ID = re.compile(r"cluster-[2-7a-zA-Z]{11,16}")

#: Device fields per instance type. hsm1.medium values are the ones the CLI
#: prints on real hardware (spec §4.2); hsm2m.medium values are inferred (its
#: device strings are not published), see docs/hsm.md.
_DEVICE: dict[str, dict[str, str]] = {
    "hsm1.medium": {
        "vendor": "Marvell Semiconductors, Inc.",
        "model": "NITROX-III CNN35XX-NFBE",
        "hardware-version-major": "5",
        "hardware-version-minor": "3",
        "firmware-version-major": "2",
        "firmware-version-minor": "6",
        "firmware-build-number": "16",
        "firmware-id": "CNN35XX-NFBE-FW-2.06-16",
    },
    "hsm2m.medium": {
        "vendor": "Marvell Semiconductors, Inc.",
        "model": "LS2 CN10KXX-NFBE",
        "hardware-version-major": "6",
        "hardware-version-minor": "0",
        "firmware-version-major": "3",
        "firmware-version-minor": "3",
        "firmware-build-number": "5",
        "firmware-id": "CN10KXX-NFBE-FW-3.03-05",
    },
}


@dataclass(frozen=True)
class HsmIdentity:
    hsm_id: str  # "hsm-" + 11 chars of [2-7a-z]
    cluster_id: str  # "cluster-" + 11 chars
    serial: str  # e.g. "5.3G1941-ICM000590"
    hsm_type: str  # "hsm2m.medium" | "hsm1.medium"
    mode: str = FIPS  # "FIPS" | "NON_FIPS", the cluster's

    def __post_init__(self) -> None:
        if not _HSM_ID.fullmatch(self.hsm_id):
            raise ValueError(f"bad HSM id {self.hsm_id!r}")
        if not _CLUSTER_ID.fullmatch(self.cluster_id):
            raise ValueError(f"bad cluster id {self.cluster_id!r}")
        if self.hsm_type not in HSM_TYPES:
            raise ValueError(f"HSM type must be one of {HSM_TYPES}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if self.mode == NON_FIPS and self.hsm_type != "hsm2m.medium":
            raise ValueError("non-FIPS mode is only available with hsm2m.medium")
        if not self.serial or len(self.serial) > 64:
            raise ValueError("serial must be 1 to 64 characters")

    @property
    def fips(self) -> bool:
        return self.mode == FIPS

    def info(self) -> dict[str, Any]:
        """The ``hsm.info`` result: the CLI's hsm-info fields plus our ids."""
        device = _DEVICE[self.hsm_type]
        return {
            "vendor": device["vendor"],
            "model": device["model"],
            "serial-number": self.serial,
            **{k: v for k, v in device.items() if k not in ("vendor", "model")},
            "fips-state": FIPS_STATES[self.mode],
            "hsm-id": self.hsm_id,
            "cluster-id": self.cluster_id,
            "hsm-type": self.hsm_type,
            "mode": self.mode,
        }
