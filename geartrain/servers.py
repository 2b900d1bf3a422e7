"""Job server addresses: ``"host:port"`` strings, lists, ``GEARMAN_SERVERS``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NamedTuple

DEFAULT_PORT = 4730
DEFAULT_HOST = "127.0.0.1"


class ServerAddress(NamedTuple):
    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


#: What every ``servers=`` argument accepts: ``"h1:4730,h2"``, a list of
#: ``"host:port"`` strings, (host, port) tuples or ServerAddress, or None
#: (``$GEARMAN_SERVERS``, else 127.0.0.1:4730).
Servers = str | Iterable[str | tuple[str, int] | ServerAddress] | None


def parse_server(spec: str | tuple[str, int] | ServerAddress) -> ServerAddress:
    """``"host"``, ``"host:port"``, ``"[::1]:4730"``, ``"::1"`` or a (host, port) tuple."""
    if isinstance(spec, tuple):
        return ServerAddress(str(spec[0]), int(spec[1]))
    text = spec.strip()
    if not text:
        raise ValueError("empty server address")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"bad server address {spec!r}")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:  # a bare host name, IPv4 address, or IPv6 address without brackets
        host, port = text, ""
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad port in server address {spec!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"bad port in server address {spec!r}")
    return ServerAddress(host or DEFAULT_HOST, number)


def parse_servers(
    servers: Servers = None,
    env: str = "GEARMAN_SERVERS",
) -> list[ServerAddress]:
    """Server list from an argument, else the *env* variable, else 127.0.0.1:4730.

    A string may hold several addresses separated by commas or spaces.
    """
    if servers is None:
        servers = os.environ.get(env) or f"{DEFAULT_HOST}:{DEFAULT_PORT}"
    if isinstance(servers, str):
        items: list[str | tuple[str, int] | ServerAddress] = [
            s for s in servers.replace(",", " ").split() if s
        ]
    else:
        items = list(servers)
    result = [parse_server(s) for s in items]
    if not result:
        raise ValueError("no job server given")
    return result
