"""Trusted reverse proxies: whose ``X-Forwarded-*`` headers are believed, and the client.

Werkzeug's ``ProxyFix`` trusts a fixed number of hops from whoever connects; anyone who
reaches the service directly could then claim any address. This wrapper believes the
forwarded headers only when the immediate peer (``REMOTE_ADDR``) is one of the
configured proxies (``AUTHZ_TRUSTED_PROXIES``), and takes as the client the right-most
address of ``X-Forwarded-For`` that is not itself a trusted proxy: every address left of
it was written by the client and proves nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from flask import Flask
from flask import request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
WSGIApp = Callable[[dict[str, Any], Any], Any]

#: Set in the WSGI environ to the proxy's own address when the peer is a trusted proxy.
PEER_KEY = "authz.proxy"
#: At most this many ``X-Forwarded-For`` entries are read, right to left.
MAX_HOPS = 32
#: Peers whose trust is remembered (the cache is emptied when it grows past this).
MAX_PEERS = 4096
_SCHEMES = ("http", "https")


def parse_networks(value: str | Iterable[str]) -> tuple[Network, ...]:
    """Parse addresses and networks (comma-separated text or a list); ValueError when bad."""
    items = value.split(",") if isinstance(value, str) else list(value)
    networks = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as e:
            raise ValueError(f"{item!r} is not an address or network") from e
    return tuple(networks)


def _address(text: str) -> Address | None:
    """Parse one address as proxies write it: bare, ``[v6]``, with or without a port."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """WSGI middleware: believe ``X-Forwarded-For/-Proto/-Host`` from trusted peers only."""

    def __init__(self, app: WSGIApp, networks: Iterable[Network]) -> None:
        self.app = app
        self.networks = tuple(networks)
        #: REMOTE_ADDR -> the trusted proxy's parsed address, or None when not trusted.
        self._peers: dict[str, Address | None] = {}

    def trusted(self, address: Address | None) -> bool:
        """Whether ``address`` is one of the configured proxies."""
        return address is not None and any(address in n for n in self.networks)

    def client(self, peer: Address, forwarded_for: str) -> str:
        """The client address: the right-most entry not written by a trusted proxy."""
        client = peer
        for entry in reversed(forwarded_for.split(",")[-MAX_HOPS:]):
            if not entry.strip():
                continue
            address = _address(entry)
            if address is None:
                # A trusted hop wrote something that is not an address: nothing left of
                # it can be believed, and the hop itself is the nearest known client.
                break
            client = address
            if not self.trusted(address):
                break
        return str(client)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.networks:
            remote = environ.get("REMOTE_ADDR", "")
            # Parsing an address costs more than the decision: remember recent peers.
            try:
                peer = self._peers[remote]
            except KeyError:
                parsed = _address(remote)
                peer = parsed if self.trusted(parsed) else None
                if len(self._peers) >= MAX_PEERS:
                    self._peers.clear()
                self._peers[remote] = peer
            if peer is not None:
                self._believe(environ, peer)
        return self.app(environ, start_response)

    def _believe(self, environ: dict[str, Any], peer: Address) -> None:
        environ[PEER_KEY] = str(peer)
        environ["REMOTE_ADDR"] = self.client(peer, environ.get("HTTP_X_FORWARDED_FOR", ""))
        # Scheme and host: what the nearest trusted proxy says (the right-most value).
        proto = environ.get("HTTP_X_FORWARDED_PROTO", "").rsplit(",", 1)[-1].strip().lower()
        if proto in _SCHEMES:
            environ["wsgi.url_scheme"] = proto
        host = environ.get("HTTP_X_FORWARDED_HOST", "").rsplit(",", 1)[-1].strip()
        if host and _valid_host(host):
            environ["HTTP_HOST"] = host


def _valid_host(host: str) -> bool:
    # A host header with a path, user info or spaces would poison generated URLs.
    return len(host) <= 255 and all(c.isalnum() or c in "-.:[]_" for c in host)


def client_address() -> str:
    """The address of the client of this request (behind trusted proxies: the real one)."""
    return request.remote_addr or "unknown"


def from_trusted_proxy() -> bool:
    """Whether this request came through a trusted proxy (so its forwarded headers count)."""
    return PEER_KEY in request.environ


def init_app(app: Flask, trusted: str | Iterable[str]) -> None:
    """Wrap the app so forwarded headers are believed from ``trusted`` proxies only."""
    networks = parse_networks(trusted)
    if networks:  # none configured: nothing to believe, nothing to wrap
        app.wsgi_app = TrustedProxies(app.wsgi_app, networks)  # type: ignore[method-assign]
