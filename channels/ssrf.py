"""A guard against server-side request forgery for URLs taken from journey files.

A webhook's URL is written by whoever edits journeys, not by the operator, so it must
not reach what only the engine's host can reach: loopback, private networks, link-local
addresses and the cloud metadata services behind them. The guard resolves the host,
refuses the request unless every address is public, and returns the address it checked
so the caller connects to that very address (a second lookup could answer differently:
DNS rebinding). Callers follow redirects themselves and check every hop.

Numeric spellings are read the way ``inet_aton`` reads them (``2130706433``,
``0x7f.1``, ``0177.0.0.1``), and addresses hidden inside IPv6 (IPv4-mapped
``::ffff:127.0.0.1``, NAT64 ``64:ff9b::a9fe:a9fe``, 6to4, Teredo) are checked as the
IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from engine.errors import ChannelError

IPv4 = ipaddress.IPv4Address
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[IPAddress]]

#: Instance metadata and platform services, refused even when private addresses are
#: allowed (unless an allowed network names them): AWS, GCP, Azure and most clouds at
#: 169.254.169.254, AWS over IPv6, ECS task metadata, Alibaba Cloud, Azure's wire server.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200", "168.63.129.16")
)

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class RefusedAddress(ChannelError):
    """The URL leads to an address the guard refuses; retrying cannot help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def ip_literal(host: str) -> IPAddress | None:
    """Read ``host`` as an IP address, in any spelling ``inet_aton`` accepts; else None.

    >>> str(ip_literal("0x7f.1"))
    '127.0.0.1'
    """
    host = host.strip().rstrip(".").strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        try:
            if part.lower().startswith("0x"):
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part, 8))
            else:
                numbers.append(int(part, 10) if part.isdigit() else -1)
        except ValueError:
            return None
    if any(n < 0 for n in numbers):
        return None
    # inet_aton: a.b.c.d, a.b.c (c fills 16 bits), a.b (b fills 24 bits), a (32 bits).
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def embedded_ipv4(ip: IPAddress) -> IPv4 | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if any(ip in network for network in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address; the server's is public by design
    return None


def refusal(ip: IPAddress, *, allow_private: bool = False, allow_networks: Iterable[Network] = ()) -> str | None:
    """Why a request to ``ip`` is refused, as ``"a loopback address"``; None if allowed.

    Args:
        allow_private: allow loopback, private, link-local and shared addresses (never
            the metadata services, unspecified, multicast or reserved ones).
        allow_networks: networks allowed whatever they are, checked first.
    """
    inner = embedded_ipv4(ip)
    candidates = [ip] if inner is None else [ip, inner]
    if any(candidate in network for candidate in candidates for network in allow_networks
           if candidate.version == network.version):
        return None
    if inner is None:
        return _refusal(ip, allow_private)
    # The IPv6 wrapper only says how to reach the IPv4 address inside; judge that one.
    reason = _refusal(inner, allow_private)
    return None if reason is None else f"{reason} ({inner}) inside an IPv6 address"


def _refusal(ip: IPAddress, allow_private: bool) -> str | None:
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if allow_private:
        if ip.is_reserved:
            return "a reserved address"
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_reserved:  # before is_private, which also holds for 240.0.0.0/4
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, through the system's resolver."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


@dataclass(frozen=True)
class AddressGuard:
    """Checks where a URL leads before anything connects there.

    Attributes:
        allow_private: ``WEBHOOK_ALLOW_PRIVATE``; allow_networks: ``WEBHOOK_ALLOW_NETWORKS``.
        resolver: host and port to addresses; tests pass a fake one.
    """

    allow_private: bool = False
    allow_networks: tuple[Network, ...] = ()
    resolver: Resolver = system_resolver

    def check(self, host: str, port: int) -> IPAddress:
        """Resolve ``host`` and return the address to connect to, if every address is allowed.

        Raises:
            RefusedAddress: the host is, or resolves to, a refused address (permanent).
            ChannelError: the host does not resolve (retryable: DNS may recover).
        """
        literal = ip_literal(host)
        if literal is not None:
            addresses: Sequence[IPAddress] = [literal]
        else:
            try:
                addresses = self.resolver(host.rstrip("."), port)
            except (OSError, UnicodeError) as exc:
                raise ChannelError(f"cannot resolve {host!r}: {exc}", retryable=True) from None
            if not addresses:
                raise ChannelError(f"{host!r} resolves to no address", retryable=True)
        for address in addresses:
            reason = refusal(address, allow_private=self.allow_private, allow_networks=self.allow_networks)
            if reason is not None:
                shown = host if literal is None or str(literal) == host else f"{host} ({literal})"
                via = "it" if literal is not None else f"it resolves to {address}, which"
                raise RefusedAddress(
                    f"refused to send to {shown}: {via} is {reason}. Webhooks may only reach public "
                    f"addresses; to allow this one, add it to WEBHOOK_ALLOW_NETWORKS"
                )
        return addresses[0]
