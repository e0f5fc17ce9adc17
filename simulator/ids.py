"""Identifiers in CloudHSM's own formats (botocore ``cloudhsmv2`` patterns).

Cluster, HSM and backup ids are a prefix plus 11 characters of ``[2-7a-z]``
(the service's ids are lowercase base32 in practice, e.g. ``cluster-igklspoyj5v``;
the BOTO pattern also admits uppercase and up to 16 characters). ENI ids are
``eni-`` plus 17 hex digits, and HSM serial numbers look like the
``5.3G1941-ICM000590`` strings that ``cluster hsm-info`` prints.
"""

from __future__ import annotations

import re
import secrets

#: The alphabet of CloudHSM resource ids: RFC 4648 base32 digits, lowercase.
ID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"

#: Characters after the prefix in ids we mint (the BOTO minimum).
ID_LENGTH = 11

CLUSTER_ID_PATTERN = re.compile(r"cluster-[2-7a-zA-Z]{11,16}")
HSM_ID_PATTERN = re.compile(r"hsm-[2-7a-zA-Z]{11,16}")
BACKUP_ID_PATTERN = re.compile(r"backup-[2-7a-zA-Z]{11,16}")
ENI_ID_PATTERN = re.compile(r"eni-[0-9a-fA-F]{8,17}")


def _suffix() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def new_cluster_id() -> str:
    return f"cluster-{_suffix()}"


def new_hsm_id() -> str:
    return f"hsm-{_suffix()}"


def new_backup_id() -> str:
    return f"backup-{_suffix()}"


def new_eni_id() -> str:
    return f"eni-{secrets.token_hex(9)[:17]}"


def new_vpc_id() -> str:
    return f"vpc-{secrets.token_hex(9)[:17]}"


def new_subnet_id() -> str:
    return f"subnet-{secrets.token_hex(9)[:17]}"


def new_security_group_id() -> str:
    return f"sg-{secrets.token_hex(9)[:17]}"


def new_hsm_serial() -> str:
    """A serial in the shape of a LiquidSecurity card's: ``5.3G<4 digits>-ICM<6 digits>``."""
    return f"5.3G{secrets.randbelow(10**4):04d}-ICM{secrets.randbelow(10**6):06d}"


def is_cluster_id(value: str) -> bool:
    return CLUSTER_ID_PATTERN.fullmatch(value) is not None


def is_hsm_id(value: str) -> bool:
    return HSM_ID_PATTERN.fullmatch(value) is not None


def is_backup_id(value: str) -> bool:
    return BACKUP_ID_PATTERN.fullmatch(value) is not None


def is_eni_id(value: str) -> bool:
    return ENI_ID_PATTERN.fullmatch(value) is not None


SUBNET_ID_PATTERN = re.compile(r"subnet-[0-9a-fA-F]{8,17}")


def is_subnet_id(value: str) -> bool:
    return SUBNET_ID_PATTERN.fullmatch(value) is not None
