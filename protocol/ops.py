"""Operation names and the shapes of their arguments and results.

This table is the contract between the HSM (``simulator/hsm``) and the client
(``client/``). Each entry lists the arguments a request carries and what the
result map holds. Conventions:

* Keys travel as *key objects*: ``{"key-reference": int, "attributes": {name:
  value}, "key-info": {...}}`` where attribute names are the CloudHSM CLI names
  (``label``, ``key-type``, ``class``, ``sign``, ``check-value``...) and binary
  values (``id``, ``modulus``, ``ec-point``, ``check-value``, ``public-exponent``)
  are CBOR byte strings; the CLI renders them as ``0x`` hex. ``key-info`` holds
  ``key-owners`` and ``shared-users`` (lists of usernames) and
  ``key-quorum-values`` (``manage-key-quorum-value``, ``use-key-quorum-value``).
* Roles are ``"admin"``, ``"crypto-user"``, ``"unactivated-admin"``,
  ``"appliance"``. Usernames are compared case-insensitively and sent lowercase.
* A quorum approval (``approval``) is the parsed token file:
  ``{"approval_data": bytes, "signatures": [{"username": str, "signature": bytes}]}``.
* Mechanism names are the CLI's lowercase names (see ``protocol.mechanisms``).
* Optional arguments may be omitted; unknown argument keys are ignored.
* Errors come back as a non-zero status with ``result = {"message": str}``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Op(enum.StrEnum):
    # -- no login needed ---------------------------------------------------
    HSM_INFO = "hsm.info"
    USER_LIST = "user.list"
    QUORUM_VALUES = "quorum.values"
    QUORUM_TIMEOUTS = "quorum.timeouts"
    CLUSTER_MEMBERS = "cluster.members"
    # -- session ------------------------------------------------------------
    LOGIN = "login"
    LOGOUT = "logout"
    WHOAMI = "session.whoami"
    CLUSTER_ACTIVATE = "cluster.activate"
    # -- users --------------------------------------------------------------
    USER_CREATE = "user.create"
    USER_DELETE = "user.delete"
    USER_CHANGE_PASSWORD = "user.change_password"
    USER_CHANGE_MFA = "user.change_mfa"
    USER_REGISTER_QUORUM_KEY = "user.register_quorum_key"
    USER_EXTRACT_REPLICA = "user.extract_replica"
    USER_INSERT_REPLICA = "user.insert_replica"
    # -- quorum -------------------------------------------------------------
    QUORUM_TOKEN_GENERATE = "quorum.token.generate"
    QUORUM_TOKEN_LIST = "quorum.token.list"
    QUORUM_TOKEN_DELETE = "quorum.token.delete"
    QUORUM_SET_VALUE = "quorum.set_value"
    QUORUM_SET_TIMEOUT = "quorum.set_timeout"
    # -- keys ---------------------------------------------------------------
    KEY_GENERATE = "key.generate"
    KEY_GENERATE_PAIR = "key.generate_pair"
    KEY_FIND = "key.find"
    KEY_GET = "key.get"
    KEY_SET_ATTRIBUTE = "key.set_attribute"
    KEY_DELETE = "key.delete"
    KEY_SHARE = "key.share"
    KEY_UNSHARE = "key.unshare"
    KEY_IMPORT = "key.import"
    KEY_EXPORT_PUBLIC = "key.export_public"
    KEY_WRAP = "key.wrap"
    KEY_UNWRAP = "key.unwrap"
    KEY_DERIVE = "key.derive"
    KEY_EXTRACT_MASKED = "key.extract_masked"
    KEY_INSERT_MASKED = "key.insert_masked"
    KEY_DIGESTS = "key.digests"
    KEY_EXTRACT_REPLICA = "key.extract_replica"
    KEY_INSERT_REPLICA = "key.insert_replica"
    # -- cryptography -------------------------------------------------------
    CRYPTO_SIGN = "crypto.sign"
    CRYPTO_VERIFY = "crypto.verify"
    CRYPTO_ENCRYPT = "crypto.encrypt"
    CRYPTO_DECRYPT = "crypto.decrypt"
    CRYPTO_MAC = "crypto.mac"
    CRYPTO_MAC_VERIFY = "crypto.mac_verify"
    CRYPTO_DIGEST = "crypto.digest"
    CRYPTO_RANDOM = "crypto.random"
    # -- client-to-HSM mTLS policy (hsm2m only) -----------------------------
    MTLS_REGISTER_TRUST_ANCHOR = "mtls.register_trust_anchor"
    MTLS_DEREGISTER_TRUST_ANCHOR = "mtls.deregister_trust_anchor"
    MTLS_LIST_TRUST_ANCHORS = "mtls.list_trust_anchors"
    MTLS_SET_ENFORCEMENT = "mtls.set_enforcement"
    MTLS_GET_ENFORCEMENT = "mtls.get_enforcement"
    # -- audit --------------------------------------------------------------
    AUDIT_READ = "audit.read"


@dataclass(frozen=True, slots=True)
class OpShape:
    args: str
    result: str


#: Human-readable argument and result shapes (rendered into docs/protocol.md).
SHAPES: dict[Op, OpShape] = {
    Op.HSM_INFO: OpShape(
        "{}",
        "{vendor, model, serial-number, hardware-version-major, hardware-version-minor, "
        "firmware-version-major, firmware-version-minor, firmware-build-number, firmware-id, "
        "fips-state, hsm-id, cluster-id, hsm-type, mode: FIPS|NON_FIPS}",
    ),
    Op.USER_LIST: OpShape(
        "{}",
        "{users: [{username, role, locked: bool, mfa: [{strategy, status}], "
        "quorum: [{strategy, status}]}]}",
    ),
    Op.QUORUM_VALUES: OpShape("{}", "{user: int, quorum: int, cluster: int}"),
    Op.QUORUM_TIMEOUTS: OpShape("{}", "{generated: int, approved: int}"),
    Op.CLUSTER_MEMBERS: OpShape(
        "{}",
        "{cluster_id, hsms: [{hsm_id, hostname, port: int, state}]} (the cluster's current "
        "members, as the cluster last told the HSM; empty when it has not)",
    ),
    Op.LOGIN: OpShape(
        "{username, role, password, mfa_token?: {unsigned: bytes, signed: bytes}}",
        "{username, role}",
    ),
    Op.LOGOUT: OpShape("{}", "{}"),
    Op.WHOAMI: OpShape("{}", "{username, role} or null"),
    Op.CLUSTER_ACTIVATE: OpShape("{password}", "{}"),
    Op.USER_CREATE: OpShape("{username, role, password, approval?}", "{username, role}"),
    Op.USER_DELETE: OpShape("{username, role, approval?}", "{username, role}"),
    Op.USER_CHANGE_PASSWORD: OpShape(
        "{username, role, password, deregister_mfa?: bool, deregister_quorum?: bool, approval?}",
        "{username, role}",
    ),
    Op.USER_CHANGE_MFA: OpShape(
        "{username, role, public_key?: PEM bytes, signed_token?: {unsigned, signed}, "
        "deregister?: bool, change_password?, change_quorum?: bool, approval?}",
        "{username, role}",
    ),
    Op.USER_REGISTER_QUORUM_KEY: OpShape(
        "{public_key: PEM bytes, signed_token: {approval_data: bytes, signed: bytes}}",
        "{username, role}",
    ),
    Op.USER_EXTRACT_REPLICA: OpShape(
        "{username, role: admin|crypto-user}",
        "{replica: bytes} (the user sealed for every cluster of this backup lineage)",
    ),
    Op.USER_INSERT_REPLICA: OpShape(
        "{replica: bytes}", "{username, role} (an identical user already here is success)"
    ),
    Op.QUORUM_TOKEN_GENERATE: OpShape(
        "{service: user|quorum|cluster|registration|key-management|key-usage, "
        "approval_data?: bytes (a token another HSM generated for the same user and service, "
        "placed here too; <= 245 bytes; not for registration)}",
        "{approval_data: bytes, token: bytes (SHA-256 of approval_data), timeout: int}",
    ),
    Op.QUORUM_TOKEN_LIST: OpShape(
        "{}",
        "{tokens: [{username, service, token: bytes (SHA-256 of approval_data), "
        "approvals-required, number-of-approvals, token-timeout-seconds}]}",
    ),
    Op.QUORUM_TOKEN_DELETE: OpShape("{scope: user|all}", "{deleted: int}"),
    Op.QUORUM_SET_VALUE: OpShape("{service: user|quorum|cluster, value: 1..8, approval?}", "{}"),
    Op.QUORUM_SET_TIMEOUT: OpShape("{generated?: int, approved?: int}", "{}"),
    Op.KEY_GENERATE: OpShape(
        "{key_type: aes|generic-secret|des3, key_length_bytes, label?, session?: bool, "
        "attributes?: {name: value}, share_with?: [username], manage_quorum?: int, "
        "use_quorum?: int}",
        "{key: key object}",
    ),
    Op.KEY_GENERATE_PAIR: OpShape(
        "{key_type: rsa|ec|mldsa, modulus_size_bits?, public_exponent?: int, curve? (ed25519: "
        "non-FIPS hsm2m.medium only), "
        "mldsa_algorithm?: ML-DSA-44|ML-DSA-65|ML-DSA-87 (hsm2m.medium only), public_label?, "
        "private_label?, session?: bool, public_attributes?, private_attributes?, share_with?, "
        "manage_quorum?, use_quorum?}",
        "{public_key: key object, private_key: key object}",
    ),
    Op.KEY_FIND: OpShape(
        "{filter?: {attribute name: value}, key_reference?: int, verbose?: bool, after?: int}",
        "{keys: [key object], next_after?: int} (visible keys only: owned, shared, and every "
        "public key; in reference order, past `after`; a page holds at most 512 KiB of key "
        "objects, and `next_after` says to ask again with `after` set to it)",
    ),
    Op.KEY_GET: OpShape("{key_reference}", "{key: key object}"),
    Op.KEY_SET_ATTRIBUTE: OpShape("{key_reference, name, value, approval?}", "{key: key object}"),
    Op.KEY_DELETE: OpShape("{key_reference}", "{}"),
    Op.KEY_SHARE: OpShape("{key_reference, username, role, approval?}", "{key: key object}"),
    Op.KEY_UNSHARE: OpShape("{key_reference, username, role, approval?}", "{key: key object}"),
    Op.KEY_IMPORT: OpShape(
        "{key_class: public-key|private-key|secret-key, key_type, pem?: bytes, value?: bytes, "
        "label?, session?, attributes?, share_with?}",
        "{key: key object}",
    ),
    Op.KEY_EXPORT_PUBLIC: OpShape("{key_reference}", "{pem: bytes}"),
    Op.KEY_WRAP: OpShape(
        "{mechanism, wrapping_key: int, payload_key: int, params?: {iv?, aad?, "
        "tag_length_bits?, hash?, mgf?}, wrapping_approval?, payload_approval?}",
        "{wrapped_key_data: bytes, iv?: bytes}",
    ),
    Op.KEY_UNWRAP: OpShape(
        "{mechanism, unwrapping_key: int, wrapped_key_data: bytes, key_type, key_class, "
        "params?, label?, session?, attributes?, share_with?, manage_quorum?, use_quorum?, "
        "approval?}",
        "{key: key object}",
    ),
    Op.KEY_DERIVE: OpShape(
        "{mechanism: ecdh-x963-kdf|sp800-108-counter-kdf, base_key: int, params: {hash?, "
        "public_point?, shared_info?, label?, context?}, key_type, key_length_bytes, label?, "
        "session?, attributes?}",
        "{key: key object}",
    ),
    Op.KEY_EXTRACT_MASKED: OpShape("{key_reference}", "{masked_object: bytes}"),
    Op.KEY_INSERT_MASKED: OpShape("{masked_object: bytes}", "{key: key object}"),
    Op.KEY_DIGESTS: OpShape(
        "{}", "{keys: {key_reference: digest bytes}} (token keys; for sync and coverage)"
    ),
    Op.KEY_EXTRACT_REPLICA: OpShape(
        "{key_reference}",
        "{replica: bytes} (the token key sealed for every cluster of this backup lineage)",
    ),
    Op.KEY_INSERT_REPLICA: OpShape(
        "{replica: bytes}", "{key: key object} (an identical key already here is success)"
    ),
    Op.CRYPTO_SIGN: OpShape(
        "{key_reference, mechanism: rsa-pkcs|rsa-pkcs-pss|ecdsa|rsa-x-509|ml-dsa|ed25519ph|"
        "ed25519, hash?: sha1..sha512 (ed25519ph: sha512; ml-dsa, ed25519: none), data: bytes, "
        "data_type?: raw|digest (ml-dsa: raw|external-mu; ed25519: raw), mgf?, salt_length?, "
        "approval?}",
        "{signature: bytes}",
    ),
    Op.CRYPTO_VERIFY: OpShape(
        "{as crypto.sign, plus signature: bytes}", "{} or status SIGNATURE_INVALID"
    ),
    Op.CRYPTO_ENCRYPT: OpShape(
        "{key_reference, mechanism, data: bytes, iv?, aad?, tag_length_bits?, hash?, mgf?, label?}",
        "{data: bytes, iv?: bytes}",
    ),
    Op.CRYPTO_DECRYPT: OpShape("{as crypto.encrypt}", "{data: bytes}"),
    Op.CRYPTO_MAC: OpShape(
        "{key_reference, mechanism: hmac|aes-cmac, hash?, data}", "{mac: bytes}"
    ),
    Op.CRYPTO_MAC_VERIFY: OpShape("{as crypto.mac, plus mac}", "{} or SIGNATURE_INVALID"),
    Op.CRYPTO_DIGEST: OpShape("{hash, data}", "{digest: bytes}"),
    Op.CRYPTO_RANDOM: OpShape("{length: 1..16384}", "{data: bytes}"),
    Op.MTLS_REGISTER_TRUST_ANCHOR: OpShape(
        "{certificate: PEM bytes, approval?}", "{certificate_reference: int}"
    ),
    Op.MTLS_DEREGISTER_TRUST_ANCHOR: OpShape("{certificate_reference: int, approval?}", "{}"),
    Op.MTLS_LIST_TRUST_ANCHORS: OpShape(
        "{}", "{trust_anchors: [{certificate_reference: int, certificate: PEM bytes}]}"
    ),
    Op.MTLS_SET_ENFORCEMENT: OpShape("{level: cluster|none, approval?}", "{}"),
    Op.MTLS_GET_ENFORCEMENT: OpShape("{}", "{level: cluster|none}"),
    Op.AUDIT_READ: OpShape(
        "{after_sequence?: int, limit?: int}",
        "{records: [{sequence, time_us, reboot_counter, command_type, opcode, session_handle, "
        "response, log_type, user_name?, user_type?, key_handle?, public_key_handle?}]}",
    ),
}
