"""The anchor signing key: Ed25519, kept in a file outside the database.

`orderflow audit keygen --out DIR` writes `anchor-signing.key` (PKCS#8 PEM, mode 0600: give it
to the workers and `orderflow audit anchor` only, through ORDERFLOW_AUDIT_ANCHOR_KEY_FILE) and
`anchor-signing.pub` (PEM: publish it, give it to whoever verifies, through
ORDERFLOW_AUDIT_ANCHOR_PUBLIC_KEY_FILE or `--public-key`). Whoever can write the database can
recompute every hash, but cannot sign: a forged anchor fails verification.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orderflow.audit.verify_bundle import key_id, public_key_from_pem, signed_message

PRIVATE_NAME, PUBLIC_NAME = "anchor-signing.key", "anchor-signing.pub"


class AnchorKeyError(Exception):
    """A key file that cannot be used (said in one sentence, without its content)."""


@dataclass(frozen=True)
class Signer:
    private_key: Ed25519PrivateKey
    public_key: bytes  # raw, 32 bytes
    key_id: str

    def sign(self, anchor_hash: str) -> str:
        """The hex signature of an anchor with this hash."""
        return self.private_key.sign(signed_message(anchor_hash)).hex()


def public_pem(public_key: bytes) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(public_key)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def keygen(directory: Path) -> tuple[Path, Path, str]:
    """Write a new key pair into `directory` (never over an existing one)."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise AnchorKeyError(f"{path} exists: keys are never overwritten")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        f.write(pem)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public_path.write_text(public_pem(raw), encoding="ascii")
    return private_path, public_path, key_id(raw)


@lru_cache(maxsize=8)
def load_signer(path: Path) -> Signer:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise AnchorKeyError(f"cannot read the anchor key {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise AnchorKeyError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AnchorKeyError(f"{path} is not an Ed25519 key")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return Signer(key, raw, key_id(raw))


@lru_cache(maxsize=8)
def load_public_key(path: Path) -> bytes:
    try:
        return public_key_from_pem(path.read_text(encoding="ascii"))
    except OSError as exc:
        raise AnchorKeyError(f"cannot read the anchor public key {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise AnchorKeyError(f"{path}: {exc}") from None


def signer_for(private_key_file: Path | None) -> Signer | None:
    return None if private_key_file is None else load_signer(private_key_file)


def public_key_for(
    public_key_file: Path | None, private_key_file: Path | None = None
) -> bytes | None:
    """The key anchors are verified with: the public key file, else the private key's."""
    if public_key_file is not None:
        return load_public_key(public_key_file)
    if private_key_file is not None:
        return load_signer(private_key_file).public_key
    return None
