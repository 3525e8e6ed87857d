"""The SSRF guard's list, checked without any network: literals and a fake resolver."""

from __future__ import annotations

import ipaddress

import pytest

from channels.ssrf import AddressGuard, RefusedAddress, ip_literal, refusal
from engine.errors import ChannelError


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # decimal
        ("0x7f000001", "127.0.0.1"),  # hex
        ("0x7f.1", "127.0.0.1"),  # inet_aton's a.b form
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("127.1", "127.0.0.1"),
        ("169.254.43518", "169.254.169.254"),  # a.b.c form
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("[::1]", "::1"),
        ("127.0.0.1.", "127.0.0.1"),
    ],
)
def test_numeric_spellings_are_read_as_the_address_they_reach(spelling: str, address: str) -> None:
    assert ip_literal(spelling) == ipaddress.ip_address(address)


@pytest.mark.parametrize("name", ["example.com", "1.2.3.4.5", "08.1.1.1", "256.1.1.1", "0x1g", "hooks-1.io"])
def test_names_and_impossible_numbers_are_not_literals(name: str) -> None:
    assert ip_literal(name) is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "a loopback address (127.0.0.1) inside an IPv6 address"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
        ("64:ff9b::7f00:1", "loopback"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
def test_addresses_that_are_not_public_are_refused_with_the_reason(address: str, reason: str) -> None:
    assert reason in (refusal(ipaddress.ip_address(address)) or "")


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8",
                                     "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_allow_private_opens_private_networks_but_never_the_metadata_services() -> None:
    assert refusal(ipaddress.ip_address("10.0.0.5"), allow_private=True) is None
    assert refusal(ipaddress.ip_address("127.0.0.1"), allow_private=True) is None
    assert "metadata" in (refusal(ipaddress.ip_address("169.254.169.254"), allow_private=True) or "")
    assert "metadata" in (refusal(ipaddress.ip_address("::ffff:169.254.169.254"), allow_private=True) or "")
    assert "unspecified" in (refusal(ipaddress.ip_address("0.0.0.0"), allow_private=True) or "")


def test_allowed_networks_open_exactly_what_they_name() -> None:
    allowed = (ipaddress.ip_network("10.1.0.0/16"),)

    assert refusal(ipaddress.ip_address("10.1.200.3"), allow_networks=allowed) is None
    assert refusal(ipaddress.ip_address("::ffff:10.1.200.3"), allow_networks=allowed) is None
    assert "private" in (refusal(ipaddress.ip_address("10.2.0.1"), allow_networks=allowed) or "")


def fake_resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        if host not in table:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return [ipaddress.ip_address(a) for a in table[host]]
    return resolve


def test_a_name_resolving_to_a_private_address_is_refused_naming_both() -> None:
    guard = AddressGuard(resolver=fake_resolver({"hooks.internal.example": ["10.0.0.7"]}))

    with pytest.raises(RefusedAddress) as caught:
        guard.check("hooks.internal.example", 443)

    assert caught.value.retryable is False
    message = str(caught.value)
    assert "hooks.internal.example" in message and "10.0.0.7" in message and "private" in message
    assert "WEBHOOK_ALLOW_NETWORKS" in message


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    guard = AddressGuard(resolver=fake_resolver({"split.example": ["93.184.215.14", "127.0.0.1"]}))

    with pytest.raises(RefusedAddress, match="loopback"):
        guard.check("split.example", 80)


def test_a_public_name_gives_the_address_to_connect_to() -> None:
    guard = AddressGuard(resolver=fake_resolver({"hooks.example": ["93.184.215.14", "93.184.215.15"]}))

    assert guard.check("hooks.example", 443) == ipaddress.ip_address("93.184.215.14")


def test_a_decimal_host_is_refused_without_asking_the_resolver() -> None:
    guard = AddressGuard(resolver=fake_resolver({}))

    with pytest.raises(RefusedAddress, match=r"2130706433 \(127.0.0.1\): it is a loopback address"):
        guard.check("2130706433", 80)


def test_a_name_that_does_not_resolve_is_worth_retrying() -> None:
    guard = AddressGuard(resolver=fake_resolver({}))

    with pytest.raises(ChannelError) as caught:
        guard.check("nowhere.example", 443)

    assert caught.value.retryable is True
    assert not isinstance(caught.value, RefusedAddress)
