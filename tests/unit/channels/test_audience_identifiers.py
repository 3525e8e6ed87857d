"""Audience identifiers are normalized and SHA-256 hashed the way ad platforms match them."""

from __future__ import annotations

import hashlib

import pytest

from channels import Recipient
from channels.retargeting import hashed_identifiers, normalize_email, is_removal, normalize_phone, sha256_hex


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("ada@example.com", "ada@example.com"),
        ("  Ada.Lovelace@Example.COM \n", "ada.lovelace@example.com"),
        ("ADA+shop@example.co.uk", "ada+shop@example.co.uk"),
    ],
)
def test_emails_are_trimmed_and_lowercased(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize("raw", ["", "ada", "ada@localhost", "@example.com", "ada lovelace@example.com"])
def test_what_is_not_an_email_address_gives_none(raw: str) -> None:
    assert normalize_email(raw) is None


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+14155550123", "+14155550123"),
        ("+1 (415) 555-0123", "+14155550123"),
        ("0033 6 12 34 56 78", "+33612345678"),
        ("+44 20.7946.0958", "+442079460958"),
        (" +49/30/1234567 ", "+49301234567"),
    ],
)
def test_phones_are_written_in_e164(raw: str, e164: str) -> None:
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize("raw", ["0612345678", "4155550123", "+0123456789", "+1415555012345678", "+1 415 CALL ME", "+123"])
def test_phones_without_a_country_code_or_not_phones_give_none(raw: str) -> None:
    assert normalize_phone(raw) is None


def test_sha256_hex_is_the_lowercase_hex_digest() -> None:
    digest = sha256_hex("ada@example.com")

    assert digest == hashlib.sha256(b"ada@example.com").hexdigest()
    assert len(digest) == 64 and digest == digest.lower()


def test_identifiers_are_hashed_after_normalizing_so_spellings_of_one_person_match() -> None:
    one = hashed_identifiers(Recipient("c1", email=" ADA@Example.com", phone="+1 415 555 0123"))
    other = hashed_identifiers(Recipient("c1", email="ada@example.com", phone="+14155550123"))

    assert one == other == {
        "email_sha256": sha256_hex("ada@example.com"),
        "phone_sha256": sha256_hex("+14155550123"),
        "external_id_sha256": sha256_hex("c1"),
    }


def test_no_identifier_leaves_in_clear() -> None:
    identifiers = hashed_identifiers(Recipient("cus_9", email="ada@example.com", phone="+14155550123"))

    assert all(len(v) == 64 for v in identifiers.values())
    assert not any("ada" in v or "4155550123" in v or "cus_9" in v for v in identifiers.values())


def test_a_customer_without_email_or_usable_phone_has_no_identifiers() -> None:
    assert hashed_identifiers(Recipient("c1", email="not-an-address", phone="0612345678")) == {}


@pytest.mark.parametrize(
    ("channel", "content", "removal"),
    [
        ("retargeting", {"audience": "cart_abandoners", "action": "remove"}, True),
        ("retargeting", {"audience": "cart_abandoners", "action": "add"}, False),
        ("webhook", {"action": "remove"}, False),
        ("retargeting", None, False),
    ],
)
def test_only_a_retargeting_remove_is_a_removal(channel: str, content: dict[str, str] | None, removal: bool) -> None:
    assert is_removal(channel, content) is removal


def test_an_anonymous_customer_is_matched_by_address_only_their_anonymous_id_is_no_user_id() -> None:
    identifiers = hashed_identifiers(Recipient("anon-123", email="ada@example.com", anonymous=True))

    assert identifiers == {"email_sha256": sha256_hex("ada@example.com")}
