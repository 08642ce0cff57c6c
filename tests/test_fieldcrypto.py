"""Field-level encryption: round trip, binding to record and field, wrong key, blind index,
pseudonyms, and the separate ``field.key`` secret."""

from __future__ import annotations

import pytest

from appliance.config import Settings
from appliance.fieldcrypto import (
    BlindIndex,
    FieldCipher,
    FieldCryptoError,
    FieldIntegrityError,
    FieldKeyError,
    FieldKeys,
    Pseudonymizer,
    load_field_keys,
)
from appliance.keys import FIELD_KEY, MASTER_KEY, SecretError

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def test_round_trip_with_random_nonces() -> None:
    cipher = FieldCipher(KEY_A)
    one = cipher.encrypt("262087503203977", "patient:p1:nir")
    two = cipher.encrypt("262087503203977", "patient:p1:nir")
    assert one != two, "a fresh nonce per value: equal plaintexts must not look equal"
    assert one.startswith(f"hf1.{cipher.key_id}.")
    assert FieldCipher.is_sealed(one)
    assert "262087503203977" not in one
    assert cipher.decrypt(one, "patient:p1:nir") == "262087503203977"
    assert cipher.decrypt(cipher.encrypt("Né à Orléans — ½", b"x"), b"x") == "Né à Orléans — ½"


def test_ciphertext_cannot_move_to_another_record_or_field() -> None:
    cipher = FieldCipher(KEY_A)
    token = cipher.encrypt("secret note", "patient:p1:notes")
    for other in ("patient:p2:notes", "patient:p1:identity.nir", ""):
        with pytest.raises(FieldIntegrityError, match="moved from another record"):
            cipher.decrypt(token, other)


def test_wrong_key_is_a_clear_error_never_garbage() -> None:
    token = FieldCipher(KEY_A).encrypt("value", "aad")
    with pytest.raises(FieldKeyError, match=r"wrong or rotated 'field\.key'"):
        FieldCipher(KEY_B).decrypt(token, "aad")


def test_tampered_or_malformed_values_are_refused() -> None:
    cipher = FieldCipher(KEY_A)
    token = cipher.encrypt("value", "aad")
    version, kid, body = token.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(FieldIntegrityError):
        cipher.decrypt(f"{version}.{kid}.{flipped}", "aad")
    for bad in ("plaintext", f"hf9.{kid}.{body}", f"hf1.{kid}.AAAA", f"hf1.{kid}.!!!", "a.b.c.d"):
        with pytest.raises(FieldCryptoError):
            cipher.decrypt(bad, "aad")


def test_previous_keys_still_open_old_values() -> None:
    old = FieldCipher(KEY_A).encrypt("kept", "aad")
    rotated = FieldCipher(KEY_B, previous=[KEY_A])
    assert rotated.decrypt(old, "aad") == "kept"
    assert rotated.encrypt("new", "aad").startswith(f"hf1.{rotated.key_id}.")


def test_keys_must_be_256_bits() -> None:
    with pytest.raises(ValueError, match="256 bits"):
        FieldCipher(b"short")
    with pytest.raises(ValueError, match="256 bits"):
        FieldKeys(b"\x00" * 16)


def test_blind_index_normalises_and_separates_fields() -> None:
    nir = BlindIndex(KEY_A, "nir")
    assert nir.compute("2 62 08 75 032 039 77") == nir.compute("262087503203977")
    assert nir.compute("184122a123456 97") == nir.compute("184122A12345697")
    assert nir.compute("262087503203977") != nir.compute("262087503203978")
    assert nir.compute("262087503203977") != BlindIndex(KEY_A, "ins").compute("262087503203977")
    assert nir.compute("262087503203977") != BlindIndex(KEY_B, "nir").compute("262087503203977")
    assert len(nir.compute("x")) == 64


def test_pseudonyms_are_stable_keyed_and_opaque() -> None:
    pseudo = Pseudonymizer(KEY_A, "patient")
    first = pseudo.pseudonym("0b7f6c0e-0000-4000-8000-000000000001")
    assert first == pseudo.pseudonym("0b7f6c0e-0000-4000-8000-000000000001")
    assert first.startswith("psn-")
    assert len(first) == 36
    assert first != pseudo.pseudonym("0b7f6c0e-0000-4000-8000-000000000002")
    assert first != Pseudonymizer(KEY_B, "patient").pseudonym(
        "0b7f6c0e-0000-4000-8000-000000000001"
    )


def test_derived_keys_are_distinct_per_purpose() -> None:
    keys = FieldKeys(KEY_A)
    cipher = keys.cipher()
    token = cipher.encrypt("v", "a")
    assert keys.cipher().decrypt(token, "a") == "v"
    assert keys.blind_index("nir").compute("1") != keys.blind_index("ins").compute("1")
    assert keys.key_id == cipher.key_id
    assert keys.key_id != FieldKeys(KEY_B).key_id


def test_field_key_is_its_own_secret(settings: Settings) -> None:
    field_raw = (settings.key_path / FIELD_KEY).read_bytes()
    master_raw = (settings.key_path / MASTER_KEY).read_bytes()
    assert field_raw != master_raw
    assert (settings.key_path / FIELD_KEY).stat().st_mode & 0o777 == 0o600
    keys = load_field_keys(settings)
    assert keys.root == bytes.fromhex(field_raw.decode().strip())
    (settings.key_path / FIELD_KEY).write_text("zz\n")
    with pytest.raises(SecretError, match="not hexadecimal"):
        load_field_keys(settings)
    (settings.key_path / FIELD_KEY).write_text("ab" * 16)
    with pytest.raises(SecretError, match="128 bits"):
        load_field_keys(settings)
    (settings.key_path / FIELD_KEY).unlink()
    with pytest.raises(SecretError, match="hygie keys init"):
        load_field_keys(settings)
