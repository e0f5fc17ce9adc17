"""The mechanism registry: CloudHSM CLI mechanism names and PKCS#11 CKM numbers.

Each row names a mechanism as the CloudHSM CLI spells it (``rsa-pkcs-pss``,
``aes-zero-pad``...), gives its PKCS#11 ``CKM_`` number (CloudHSM's vendor
mechanisms are ``CKM_VENDOR_DEFINED | x`` as in ``cloudhsm_pkcs11_vendor_defs.h``),
what it is for, and which key types it takes. Signature mechanisms also list
the ``CKM_SHAx_...`` numbers PKCS#11 uses when the HSM hashes the data.

:data:`DATA_LIMITS` holds CloudHSM's published maximum data sizes for the
mechanisms whose data is processed inside the HSM (AWS PKCS#11 mechanism page,
"Maximum data size for each mechanism"); HMAC limits are keyed ``hmac-<hash>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CKM_VENDOR_DEFINED = 0x80000000

#: Hash functions the CLI accepts (``--hash-function``), in order of strength.
HASHES: tuple[str, ...] = ("sha1", "sha224", "sha256", "sha384", "sha512")

#: MGF names the CLI accepts (``--mgf``), with the hash each one uses.
MGFS: dict[str, str] = {f"mgf1-{h}": h for h in HASHES}

#: PKCS#11 digest mechanism numbers, by hash name.
DIGEST_CKM: dict[str, int] = {
    "sha1": 0x220,
    "sha224": 0x255,
    "sha256": 0x250,
    "sha384": 0x260,
    "sha512": 0x270,
}

#: PKCS#11 HMAC mechanism numbers, by hash name.
HMAC_CKM: dict[str, int] = {
    "sha1": 0x221,
    "sha224": 0x256,
    "sha256": 0x251,
    "sha384": 0x261,
    "sha512": 0x271,
}

#: PKCS#11 MGF1 generator numbers (CKG_MGF1_*), by MGF name.
MGF_CKG: dict[str, int] = {
    "mgf1-sha1": 0x1,
    "mgf1-sha256": 0x2,
    "mgf1-sha384": 0x3,
    "mgf1-sha512": 0x4,
    "mgf1-sha224": 0x5,
}

SIGN, VERIFY, ENCRYPT, DECRYPT = "sign", "verify", "encrypt", "decrypt"
MAC, WRAP, UNWRAP, DERIVE, GENERATE = "mac", "wrap", "unwrap", "derive", "generate"


@dataclass(frozen=True, slots=True)
class MechanismSpec:
    name: str
    ckm: int
    functions: frozenset[str]
    key_types: tuple[str, ...]
    purpose: str
    #: For signatures hashed in the HSM: hash name -> CKM_<HASH>_<MECH>.
    ckm_by_hash: dict[str, int] = field(default_factory=dict)

    @property
    def vendor_defined(self) -> bool:
        return bool(self.ckm & CKM_VENDOR_DEFINED)


def _m(
    name: str,
    ckm: int,
    functions: tuple[str, ...],
    key_types: tuple[str, ...],
    purpose: str,
    ckm_by_hash: dict[str, int] | None = None,
) -> MechanismSpec:
    return MechanismSpec(name, ckm, frozenset(functions), key_types, purpose, ckm_by_hash or {})


MECHANISMS: dict[str, MechanismSpec] = {
    m.name: m
    for m in (
        # -- signatures --------------------------------------------------------
        _m(
            "rsa-pkcs",
            0x1,
            (SIGN, VERIFY, ENCRYPT, DECRYPT, WRAP, UNWRAP),
            ("rsa",),
            "RSA PKCS#1 v1.5: signatures (DigestInfo of the hash), encryption and key wrap",
            {"sha1": 0x6, "sha224": 0x46, "sha256": 0x40, "sha384": 0x41, "sha512": 0x42},
        ),
        _m(
            "rsa-pkcs-pss",
            0xD,
            (SIGN, VERIFY),
            ("rsa",),
            "RSA PSS signatures; the MGF1 hash must match the hash",
            {"sha1": 0xE, "sha224": 0x47, "sha256": 0x43, "sha384": 0x44, "sha512": 0x45},
        ),
        _m(
            "ecdsa",
            0x1041,
            (SIGN, VERIFY),
            ("ec",),
            "ECDSA; signatures are r||s, each padded to the curve order length",
            {
                "sha1": 0x1042,
                "sha224": 0x1043,
                "sha256": 0x1044,
                "sha384": 0x1045,
                "sha512": 0x1046,
            },
        ),
        _m(
            "ml-dsa",
            0x1D,
            (SIGN, VERIFY),
            ("mldsa",),
            "ML-DSA (FIPS 204, pure, empty context) over raw data or a 64-byte external mu",
        ),
        _m(
            "ed25519",
            0x1057,
            (SIGN, VERIFY),
            ("ec",),
            "PureEdDSA Ed25519 (CKM_EDDSA, RFC 8032 §5.1.6, no prehash) with an Ed25519 ec key, "
            "data at most 16,000 bytes; hsm2m.medium non-FIPS only",
        ),
        _m(
            "ed25519ph",
            0x1057,
            (SIGN, VERIFY),
            ("ec",),
            "HashEdDSA Ed25519ph (CKM_EDDSA, RFC 8032: SHA-512 prehash, empty context) with an "
            "Ed25519 ec key; hsm2m.medium non-FIPS only",
        ),
        _m(
            "rsa-x-509",
            0x3,
            (SIGN, VERIFY, ENCRYPT, DECRYPT),
            ("rsa",),
            "Raw RSA (no padding): data is an integer below the modulus",
        ),
        # -- encryption ----------------------------------------------------------
        _m("aes-ecb", 0x1081, (ENCRYPT, DECRYPT), ("aes",), "AES-ECB, data a multiple of 16 bytes"),
        _m("aes-cbc", 0x1082, (ENCRYPT, DECRYPT), ("aes",), "AES-CBC, 16-byte IV, no padding"),
        _m("aes-cbc-pad", 0x1085, (ENCRYPT, DECRYPT), ("aes",), "AES-CBC with PKCS#7 padding"),
        _m("aes-ctr", 0x1086, (ENCRYPT, DECRYPT), ("aes",), "AES-CTR, 16-byte counter block"),
        _m(
            "aes-gcm",
            0x1087,
            (ENCRYPT, DECRYPT, WRAP, UNWRAP),
            ("aes",),
            "AES-GCM; the HSM generates the 12-byte IV and returns it; output ciphertext||tag",
        ),
        _m(
            "cloudhsm-aes-gcm",
            CKM_VENDOR_DEFINED | 0x1087,
            (ENCRYPT, DECRYPT, WRAP, UNWRAP),
            ("aes",),
            "CloudHSM AES-GCM: the HSM's IV is prepended (IV||ciphertext||tag); callers pass no IV",
        ),
        _m(
            "rsa-oaep",
            0x9,
            (ENCRYPT, DECRYPT, WRAP, UNWRAP),
            ("rsa",),
            "RSA OAEP with SHA-1..SHA-512 and the matching MGF1",
        ),
        _m("des3-cbc", 0x133, (ENCRYPT, DECRYPT), ("des3",), "3DES-CBC, 8-byte IV, no padding"),
        _m("des3-cbc-pad", 0x136, (ENCRYPT, DECRYPT), ("des3",), "3DES-CBC with PKCS#7 padding"),
        # -- MACs ----------------------------------------------------------------
        _m(
            "hmac",
            0x251,
            (MAC,),
            ("generic-secret",),
            "HMAC with the --hash function (CKM_SHA*_HMAC; see HMAC_CKM)",
        ),
        _m("aes-cmac", 0x108A, (MAC,), ("aes",), "AES-CMAC (NIST SP 800-38B), 16-byte MAC"),
        # -- key wrap ------------------------------------------------------------
        _m(
            "aes-no-pad",
            CKM_VENDOR_DEFINED | 0x2109,
            (WRAP, UNWRAP),
            ("aes",),
            "AES key wrap, RFC 3394, no padding: payload a multiple of 8 bytes (≥ 16)",
        ),
        _m(
            "aes-pkcs5-pad",
            CKM_VENDOR_DEFINED | 0x210A,
            (WRAP, UNWRAP),
            ("aes",),
            "PKCS#5 padding to a multiple of 8 bytes, then RFC 3394 AES key wrap",
        ),
        _m(
            "aes-zero-pad",
            CKM_VENDOR_DEFINED | 0x216F,
            (WRAP, UNWRAP),
            ("aes",),
            "AES key wrap with padding, RFC 5649 (zeros after the key, length in the AIV)",
        ),
        _m(
            "rsa-aes",
            0x1054,
            (WRAP, UNWRAP),
            ("rsa",),
            "CKM_RSA_AES_KEY_WRAP: ephemeral AES key wrapped with RSA-OAEP, then RFC 5649",
        ),
        # -- derivation ----------------------------------------------------------
        _m(
            "ecdh-x963-kdf",
            0x1050,
            (DERIVE,),
            ("ec",),
            "ECDH (CKM_ECDH1_DERIVE) with the ANSI X9.63 KDF over SHA-1..SHA-512",
        ),
        _m(
            "sp800-108-counter-kdf",
            CKM_VENDOR_DEFINED | 0x1,
            (DERIVE,),
            ("generic-secret", "aes"),
            "NIST SP 800-108 KDF in counter mode with an HMAC PRF",
        ),
        # -- generation (PKCS#11 only; the CLI names the key type instead) -------
        _m("rsa-pkcs-key-pair-gen", 0x0, (GENERATE,), ("rsa",), "RSA key pair generation"),
        _m("ec-key-pair-gen", 0x1040, (GENERATE,), ("ec",), "EC key pair generation"),
        _m(
            "ml-dsa-key-pair-gen",
            0x1C,
            (GENERATE,),
            ("mldsa",),
            "ML-DSA key pair generation (hsm2m.medium only)",
        ),
        _m("aes-key-gen", 0x1080, (GENERATE,), ("aes",), "AES key generation"),
        _m(
            "generic-secret-key-gen",
            0x350,
            (GENERATE,),
            ("generic-secret",),
            "Generic secret key generation",
        ),
        _m("des3-key-gen", 0x131, (GENERATE,), ("des3",), "3DES key generation (not in FIPS mode)"),
    )
}

#: Largest data, in bytes, for mechanisms CloudHSM processes inside the HSM.
DATA_LIMITS: dict[str, int] = {
    "hmac-sha1": 16288,
    "hmac-sha224": 16256,
    "hmac-sha256": 16288,
    "hmac-sha384": 16224,
    "hmac-sha512": 16224,
    "aes-cbc": 16272,
    "aes-cbc-pad": 16272,
    "aes-gcm": 16224,
    "cloudhsm-aes-gcm": 16224,
    "des3-cbc": 16280,
    "des3-cbc-pad": 16280,
    # PureEdDSA signs the whole message in the HSM: "no larger than 16,000 bytes" (AWS CLI
    # page for crypto sign ed25519).
    "ed25519": 16000,
}


def mechanisms_for(function: str) -> tuple[str, ...]:
    """CLI names of the mechanisms that perform ``function`` (``sign``, ``wrap``...)."""
    return tuple(name for name, m in MECHANISMS.items() if function in m.functions)


def by_ckm(ckm: int) -> MechanismSpec:
    """The registry row for a PKCS#11 mechanism number (including hashed variants)."""
    for spec in MECHANISMS.values():
        if spec.ckm == ckm or ckm in spec.ckm_by_hash.values():
            return spec
    raise KeyError(f"unknown mechanism 0x{ckm:x}")
