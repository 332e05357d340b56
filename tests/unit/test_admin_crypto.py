"""Provider-credential encryption: round trips, tamper detection, context binding, rotation, key loading, masking."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

import pytest

from gateway.admin.security.crypto import (
    DecryptionError,
    SecretBox,
    key_id_for,
    load_box,
    mask,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
PLAINTEXT = "sk-canary-provider-secret-0123456789"
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def box(*keys: bytes, current: bytes | None = None) -> SecretBox:
    current = current if current is not None else keys[-1]
    return SecretBox({key_id_for(k): k for k in keys}, key_id_for(current))


def unpack(token: str) -> list[str]:
    return token.split(":")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def flip(token: str, field: int, byte_index: int) -> str:
    """Flip one bit of one byte of a base64url field (2: nonce, 3: ciphertext+tag) and re-encode it canonically."""
    parts = unpack(token)
    data = bytearray(b64url_decode(parts[field]))
    data[byte_index] ^= 0x01
    parts[field] = b64url_encode(bytes(data))
    return ":".join(parts)


# --- round trip and format -------------------------------------------------------------------------------------


@pytest.mark.parametrize("plaintext", [PLAINTEXT, "", "ключ-🔑-密钥", "x" * 10_000])
def test_round_trip(plaintext: str) -> None:
    b = box(KEY_A)
    assert b.decrypt(b.encrypt(plaintext, context="deepseek"), context="deepseek") == plaintext


def test_token_is_self_describing_with_a_96_bit_nonce() -> None:
    b = box(KEY_A)
    token = b.encrypt(PLAINTEXT, context="deepseek")
    assert re.fullmatch(r"v1:[0-9a-f]{8}:[A-Za-z0-9_-]+:[A-Za-z0-9_-]+", token)
    version, key_id, nonce, sealed = unpack(token)
    assert (version, key_id) == ("v1", key_id_for(KEY_A))
    assert len(b64url_decode(nonce)) == 12
    assert len(b64url_decode(sealed)) == len(PLAINTEXT.encode()) + 16
    assert PLAINTEXT not in token


def test_each_encryption_uses_a_fresh_nonce() -> None:
    b = box(KEY_A)
    tokens = {b.encrypt(PLAINTEXT, context="p") for _ in range(50)}
    assert len(tokens) == 50
    assert len({unpack(t)[2] for t in tokens}) == 50


# --- tampering ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "byte_index"),
    [(2, 0), (2, 11), (3, 0), (3, len(PLAINTEXT) - 1), (3, len(PLAINTEXT)), (3, -1)],
    ids=["nonce-first", "nonce-last", "ciphertext-first", "ciphertext-last", "tag-first", "tag-last"],
)
def test_any_flipped_byte_is_detected(field: int, byte_index: int) -> None:
    b = box(KEY_A)
    token = b.encrypt(PLAINTEXT, context="deepseek")
    tampered = flip(token, field, byte_index)
    assert tampered != token
    with pytest.raises(DecryptionError, match="failed authentication"):
        b.decrypt(tampered, context="deepseek")


def test_truncated_or_extended_ciphertext_is_detected() -> None:
    b = box(KEY_A)
    parts = unpack(b.encrypt(PLAINTEXT, context="p"))
    sealed = b64url_decode(parts[3])
    for changed in (sealed[:-1], sealed + b"\x00", sealed[1:]):
        with pytest.raises(DecryptionError):
            b.decrypt(":".join([*parts[:3], b64url_encode(changed)]), context="p")


def test_wrong_context_is_refused() -> None:
    b = box(KEY_A)
    token = b.encrypt(PLAINTEXT, context="deepseek")
    with pytest.raises(DecryptionError, match="another row"):
        b.decrypt(token, context="qwen")
    with pytest.raises(DecryptionError):
        b.decrypt(token, context="deepseek ")


def test_unknown_key_id_is_refused() -> None:
    token = box(KEY_A).encrypt(PLAINTEXT, context="p")
    with pytest.raises(DecryptionError, match="unknown key id") as info:
        box(KEY_B).decrypt(token, context="p")
    assert "SWITCHYARD_SECRET_KEY_OLD" in str(info.value)


def test_key_id_swapped_to_another_known_key_is_refused() -> None:
    both = box(KEY_A, KEY_B, current=KEY_A)
    parts = unpack(both.encrypt(PLAINTEXT, context="p"))
    parts[1] = key_id_for(KEY_B)
    with pytest.raises(DecryptionError, match="failed authentication"):
        both.decrypt(":".join(parts), context="p")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v1",
        "v1:abcd1234:AAAA",
        "v2:{kid}:{nonce}:{sealed}",
        "v1:{kid}:{nonce}:{sealed}:extra",
        "v1:{kid}:{nonce}=:{sealed}",  # padding is not part of the format
        "v1:{kid}:{nonce}:{sealed}+",  # standard-alphabet character
        "v1:{kid}:AAAA:{sealed}",  # 3-byte nonce
        "v1:{kid}:{nonce}:AAAA",  # shorter than a tag
        "v1:bad/id:{nonce}:{sealed}",
        "v1:{kid}:{nonce}:{noncanonical}",  # same bytes, other spelling (unused low bits set)
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    b = box(KEY_A)
    _, kid, nonce, sealed = unpack(b.encrypt("abcd", context="p"))  # 20 bytes: the last character has 2 spare bits
    noncanonical = sealed[:-1] + B64URL_ALPHABET[B64URL_ALPHABET.index(sealed[-1]) ^ 1]
    assert noncanonical != sealed and b64url_decode(noncanonical) == b64url_decode(sealed)
    with pytest.raises(DecryptionError):
        b.decrypt(token.format(kid=kid, nonce=nonce, sealed=sealed, noncanonical=noncanonical), context="p")


def test_error_messages_carry_no_secret_or_key() -> None:
    b = box(KEY_A)
    token = b.encrypt(PLAINTEXT, context="p")
    messages = []
    for bad_context, bad_token in (("q", token), ("p", flip(token, 3, 0)), ("p", token.replace("v1:", "v9:"))):
        with pytest.raises(DecryptionError) as info:
            b.decrypt(bad_token, context=bad_context)
        messages.append(str(info.value) + repr(info.value))
    for message in messages:
        for forbidden in (PLAINTEXT, b64(KEY_A), KEY_A.hex(), unpack(token)[3]):
            assert forbidden not in message
    assert b64(KEY_A) not in repr(b) and KEY_A.hex() not in repr(b)


# --- rotation ----------------------------------------------------------------------------------------------------


def test_rotation_moves_a_secret_from_the_old_key_to_the_current_one() -> None:
    old_token = box(KEY_A).encrypt(PLAINTEXT, context="deepseek")
    both = box(KEY_A, KEY_B, current=KEY_B)
    assert both.needs_rotation(old_token)
    assert both.decrypt(old_token, context="deepseek") == PLAINTEXT

    new_token = both.rotate(old_token, context="deepseek")
    assert unpack(new_token)[1] == key_id_for(KEY_B)
    assert not both.needs_rotation(new_token)
    assert box(KEY_B).decrypt(new_token, context="deepseek") == PLAINTEXT
    with pytest.raises(DecryptionError, match="unknown key id"):
        box(KEY_B).decrypt(old_token, context="deepseek")


def test_rotate_keeps_a_current_token_but_still_verifies_it() -> None:
    b = box(KEY_A)
    token = b.encrypt(PLAINTEXT, context="p")
    assert b.rotate(token, context="p") == token
    with pytest.raises(DecryptionError):
        b.rotate(token, context="other")
    with pytest.raises(DecryptionError):
        box(KEY_A, KEY_B, current=KEY_B).rotate(flip(token, 3, 0), context="p")


def test_needs_rotation_refuses_garbage() -> None:
    with pytest.raises(DecryptionError):
        box(KEY_A).needs_rotation("not-a-token")


def test_secret_box_validates_its_keys() -> None:
    with pytest.raises(ValueError, match="current key id"):
        SecretBox({"a": KEY_A}, "b")
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox({"a": KEY_A[:16]}, "a")
    with pytest.raises(ValueError, match="key id"):
        SecretBox({"a:b": KEY_A}, "a:b")


# --- load_box ----------------------------------------------------------------------------------------------------


def test_load_box_derives_the_key_id_from_sha256() -> None:
    b = load_box({"SWITCHYARD_SECRET_KEY": b64(KEY_A)})
    assert b.current_key_id == hashlib.sha256(KEY_A).hexdigest()[:8]
    token = b.encrypt(PLAINTEXT, context="p")
    assert SecretBox({b.current_key_id: KEY_A}, b.current_key_id).decrypt(token, context="p") == PLAINTEXT


def test_load_box_accepts_the_documented_generator_and_url_safe_base64() -> None:
    generated = base64.b64encode(secrets.token_bytes(32)).decode()
    assert load_box({"SWITCHYARD_SECRET_KEY": generated}).current_key_id == key_id_for(base64.b64decode(generated))
    url_safe = base64.urlsafe_b64encode(KEY_B).decode()
    assert load_box({"SWITCHYARD_SECRET_KEY": f" {url_safe}\n"}).current_key_id == key_id_for(KEY_B)


def test_load_box_old_keys_decrypt_but_do_not_encrypt() -> None:
    key_c = bytes(range(200, 232))
    old_token = load_box({"SWITCHYARD_SECRET_KEY": b64(KEY_A)}).encrypt(PLAINTEXT, context="p")
    env = {"SWITCHYARD_SECRET_KEY": b64(KEY_B), "SWITCHYARD_SECRET_KEY_OLD": f"{b64(key_c)}, {b64(KEY_A)},"}
    b = load_box(env)
    assert b.current_key_id == key_id_for(KEY_B)
    assert b.decrypt(old_token, context="p") == PLAINTEXT
    assert unpack(b.rotate(old_token, context="p"))[1] == key_id_for(KEY_B)


GENERATOR = 'python -c "import secrets,base64;print(base64.b64encode(secrets.token_bytes(32)).decode())"'


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SWITCHYARD_SECRET_KEY": "   "},
        {"SWITCHYARD_SECRET_KEY": "hunter2-not-base64!!"},
        {"SWITCHYARD_SECRET_KEY": base64.b64encode(b"sixteen-byte-key").decode()},
        {"SWITCHYARD_SECRET_KEY": base64.b64encode(b"x" * 64).decode()},
        {"SWITCHYARD_SECRET_KEY": b64(KEY_A), "SWITCHYARD_SECRET_KEY_OLD": "correct-horse-battery"},
        {"SWITCHYARD_SECRET_KEY": b64(KEY_A), "SWITCHYARD_SECRET_KEY_OLD": base64.b64encode(b"short").decode()},
    ],
    ids=["missing", "blank", "not-base64", "16-bytes", "64-bytes", "old-not-base64", "old-too-short"],
)
def test_load_box_errors_explain_how_to_generate_a_key_without_echoing_it(env: dict[str, str]) -> None:
    with pytest.raises(ValueError) as info:
        load_box(env)
    message = str(info.value)
    assert GENERATOR in message
    assert "SWITCHYARD_SECRET_KEY" in message
    for value in env.values():
        if value.strip():
            assert value.strip() not in message


# --- mask --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "masked"),
    [
        ("sk-1234567890abcdefghijABCD", "sk-...ABCD"),
        ("sk-ant-api03-" + "x" * 40 + "wxyz", "sk-...wxyz"),
        ("a" * 20, "aaa...aaaa"),
        ("a" * 19, "****"),
        ("short", "****"),
        ("", "****"),
    ],
)
def test_mask(secret: str, masked: str) -> None:
    assert mask(secret) == masked


def test_mask_never_shows_more_than_seven_characters() -> None:
    secret = "sk-" + secrets.token_hex(32)
    shown = mask(secret).replace("...", "")
    assert len(shown) == 7
    assert secret[3:-4] not in mask(secret)
