"""Provider credentials encrypted at rest: AES-256-GCM with key ids for rotation and the row as associated data.

A token reads ``v1:<key id>:<base64url nonce>:<base64url ciphertext+tag>``. The context (e.g. the provider name)
is authenticated, so a ciphertext copied onto another provider's row does not decrypt. Errors never carry
plaintext or key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ENV = "SWITCHYARD_SECRET_KEY"
OLD_KEYS_ENV = "SWITCHYARD_SECRET_KEY_OLD"
GENERATE_HINT = (
    'generate one with: python -c "import secrets,base64;print(base64.b64encode(secrets.token_bytes(32)).decode())"'
)
_MASK_MIN_CHARS = 20
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_AAD_PREFIX = b"switchyard/provider-secret/" + VERSION.encode()


class DecryptionError(Exception):
    """A stored secret could not be decrypted; the message names the reason, never the secret or a key."""


class SecretBox:
    """AES-256-GCM under several key ids: encrypts with ``current``, decrypts with any key it holds."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError("the current key id is not among the keys")
        for key_id, key in keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError("a key id must be 1-64 characters of [A-Za-z0-9_-]")
            if len(key) != KEY_BYTES:
                raise ValueError(f"every key must be exactly {KEY_BYTES} bytes")
        self._ciphers = {key_id: AESGCM(bytes(key)) for key_id, key in keys.items()}
        self._current = current

    @property
    def current_key_id(self) -> str:
        """The id of the key new secrets are encrypted with."""
        return self._current

    def __repr__(self) -> str:
        return f"SecretBox(current={self._current!r}, key_ids={sorted(self._ciphers)!r})"

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """Encrypt under the current key with a fresh random 96-bit nonce, binding ``context``."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[self._current].encrypt(nonce, plaintext.encode("utf-8"), _aad(self._current, context))
        return f"{VERSION}:{self._current}:{_b64encode(nonce)}:{_b64encode(sealed)}"

    def decrypt(self, token: str, *, context: str) -> str:
        """Decrypt a token; DecryptionError on tampering, an unknown key id or the wrong context."""
        key_id, nonce, sealed = _parse(token)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptionError(
                f"the secret was encrypted under unknown key id {key_id}; is it missing from {OLD_KEYS_ENV}?"
            )
        try:
            plaintext = cipher.decrypt(nonce, sealed, _aad(key_id, context))
        except InvalidTag:
            raise DecryptionError(
                "the secret failed authentication: it was altered, belongs to another row, or the key is wrong"
            ) from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("the decrypted secret is not UTF-8 text") from None

    def needs_rotation(self, token: str) -> bool:
        """Whether the token is under a key other than the current one (malformed tokens: DecryptionError)."""
        key_id, _, _ = _parse(token)
        return key_id != self._current

    def rotate(self, token: str, *, context: str) -> str:
        """The token re-encrypted under the current key (verified and returned as is when already current)."""
        plaintext = self.decrypt(token, context=context)
        if not self.needs_rotation(token):
            return token
        return self.encrypt(plaintext, context=context)


def key_id_for(key: bytes) -> str:
    """A key's id: the first 8 hex characters of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:8]


def load_box(env: Mapping[str, str]) -> SecretBox:
    """The SecretBox from $SWITCHYARD_SECRET_KEY plus the old keys listed in $SWITCHYARD_SECRET_KEY_OLD."""
    raw = env.get(KEY_ENV, "").strip()
    if not raw:
        raise ValueError(f"{KEY_ENV} is not set; it must be the base64 of 32 random bytes; {GENERATE_HINT}")
    current = _decode_key(raw, KEY_ENV)
    old_parts = [part.strip() for part in env.get(OLD_KEYS_ENV, "").split(",")]
    old = [_decode_key(part, f"entry {n} of {OLD_KEYS_ENV}") for n, part in enumerate(old_parts, 1) if part]
    keys: dict[str, bytes] = {}
    for key in [*old, current]:
        key_id = key_id_for(key)
        if keys.get(key_id, key) != key:
            raise ValueError(f"two different keys share the key id {key_id}; replace one of them; {GENERATE_HINT}")
        keys[key_id] = key
    return SecretBox(keys, key_id_for(current))


def mask(secret: str) -> str:
    """``sk-...abcd``: the first 3 and last 4 characters; a secret under 20 characters is shown as ``****``."""
    if len(secret) < _MASK_MIN_CHARS:
        return "****"
    return f"{secret[:3]}...{secret[-4:]}"


def _decode_key(raw: str, where: str) -> bytes:
    """Strict base64 (standard or URL-safe alphabet) of exactly 32 bytes; errors never echo the value."""
    try:
        key = base64.b64decode(raw.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where} is not valid base64; {GENERATE_HINT}") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{where} must decode to exactly {KEY_BYTES} bytes, not {len(key)}; {GENERATE_HINT}")
    return key


def _aad(key_id: str, context: str) -> bytes:
    return b"\x00".join((_AAD_PREFIX, key_id.encode("ascii"), context.encode("utf-8")))


def _parse(token: str) -> tuple[str, bytes, bytes]:
    parts = token.split(":")
    if len(parts) != 4 or parts[0] != VERSION:
        raise DecryptionError(f"not a {VERSION} secret token")
    _, key_id, nonce_text, sealed_text = parts
    nonce, sealed = _b64decode(nonce_text), _b64decode(sealed_text)
    if not _KEY_ID.fullmatch(key_id) or len(nonce) != NONCE_BYTES or len(sealed) < TAG_BYTES:
        raise DecryptionError(f"malformed {VERSION} secret token")
    return key_id, nonce, sealed


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Unpadded base64url, canonical only, so one ciphertext has exactly one spelling."""
    if not _B64URL.fullmatch(text):
        raise DecryptionError(f"malformed {VERSION} secret token")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise DecryptionError(f"malformed {VERSION} secret token") from None
    if _b64encode(data) != text:
        raise DecryptionError(f"malformed {VERSION} secret token")
    return data
