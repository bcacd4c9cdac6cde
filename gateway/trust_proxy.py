"""`req.ip` / `req.ips` behind reverse proxies, as Express' `trust proxy` computes them.

Behind a Kubernetes Ingress or a load balancer the TCP peer of every socket is the
proxy. Sails (through Express and proxy-addr) then takes the client's address from
`X-Forwarded-For`, walking from the peer back towards the client for as long as the
hop is trusted. `--trust-proxy` takes Express' forms:

* empty or `false`: trust nothing; `req.ip` is the peer, `req.ips` is empty;
* `true`: trust every hop; `req.ip` is the left-most forwarded address;
* a number n: trust the n hops nearest the gateway (the peer is the first);
* a comma-separated list of addresses, CIDR subnets and the names `loopback`,
  `linklocal`, `uniquelocal`: trust hops whose address is in one of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from shared.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

NAMED_SUBNETS: Final[dict[str, tuple[str, ...]]] = {
    "loopback": ("127.0.0.1/8", "::1/128"),
    "linklocal": ("169.254.0.0/16", "fe80::/10"),
    "uniquelocal": ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
}


def _address(text: str) -> Address | None:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1, as proxy-addr reads it
    return addr


@dataclass(frozen=True, slots=True)
class ProxyTrust:
    """Which hops are trusted: `trusted(address, hop)`, hop 0 being the TCP peer."""

    trusted: Callable[[str, int], bool]
    description: str

    @classmethod
    def parse(cls, setting: str) -> ProxyTrust:
        text = setting.strip()
        if text.lower() in ("", "false"):
            return cls(lambda addr, hop: False, "off")
        if text.lower() == "true":
            return cls(lambda addr, hop: True, "every hop")
        if text.isdigit():
            hops = int(text)
            return cls(lambda addr, hop: hop < hops, f"{hops} hops")
        return cls(_subnet_trust(text), text)

    @property
    def enabled(self) -> bool:
        return self.description != "off"

    def resolve(self, peer: str, forwarded_for: str | None) -> tuple[str, list[str]]:
        """(req.ip, req.ips) for a socket whose TCP peer is `peer`."""
        if not self.enabled:
            return peer, []
        chain = [peer]
        if forwarded_for:
            chain += [a.strip() for a in reversed(forwarded_for.split(",")) if a.strip()]
        kept = len(chain)
        for hop in range(len(chain) - 1):
            if not self.trusted(chain[hop], hop):
                kept = hop + 1
                break
        chain = chain[:kept]
        # req.ips: farthest first, without the peer itself (Express' ips getter)
        return chain[-1], chain[:0:-1]


NO_PROXY: Final = ProxyTrust.parse("")
"""Trust no proxy: req.ip is the socket's peer (the default)."""


def _subnet_trust(text: str) -> Callable[[str, int], bool]:
    networks: list[Network] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        for subnet in NAMED_SUBNETS.get(item.lower(), (item,)):
            try:
                networks.append(ipaddress.ip_network(subnet, strict=False))
            except ValueError:
                raise ConfigError(
                    f"SAILCAST_TRUST_PROXY: {item!r} is not true, false, a hop count, an "
                    "address, a CIDR subnet, loopback, linklocal or uniquelocal"
                ) from None
    if not networks:
        raise ConfigError("SAILCAST_TRUST_PROXY: no address or subnet given")
    frozen: Sequence[Network] = tuple(networks)

    def trusted(addr: str, hop: int) -> bool:
        ip = _address(addr)
        return ip is not None and any(ip.version == n.version and ip in n for n in frozen)

    return trusted
