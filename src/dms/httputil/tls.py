"""TLS for every port (``tls_certificate_file`` and ``tls_private_key_file``; TorchServe's ``certificate_file`` and
``private_key_file``): one server context per protocol, from Python's ``ssl`` module.

TLS 1.2 at least, the ``ssl`` module's default ciphers, and ALPN naming the one protocol the port speaks (``h2``
for gRPC, which gRPC clients require; ``http/1.1`` for HTTP). A handshake must finish within ``HANDSHAKE_S``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

HANDSHAKE_S = 10.0
"""How long a client may take over its TLS handshake before the connection is closed (asyncio's default is 60 s:
long enough for a few hundred silent clients to hold their sockets)."""
HTTP1 = "http/1.1"
HTTP2 = "h2"


class TlsError(Exception):
    """The certificate or key cannot be used: the message names the file and why."""


def server_context(certificate_file: Path, private_key_file: Path, protocol: str) -> ssl.SSLContext:
    """A server context with the certificate chain and key, offering ``protocol`` (``HTTP1`` or ``HTTP2``) by ALPN."""
    for file, setting in ((certificate_file, "tls_certificate_file"), (private_key_file, "tls_private_key_file")):
        if not file.is_file():
            raise TlsError(f"{file} does not exist ({setting})")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate_file, private_key_file)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"the certificate {certificate_file} and key {private_key_file} cannot be used: {exc}") from None
    context.set_alpn_protocols([protocol])
    return context
