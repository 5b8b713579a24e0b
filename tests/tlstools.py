"""A local HTTPS server for URL-input tests: 127.0.0.1 with a self-signed certificate for a test host
name, serving fixed routes (and 302 redirects), counting the requests it answers."""

from __future__ import annotations

import datetime
import http.server
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def self_signed(host: str, folder: Path) -> tuple[Path, Path, str]:
    """(cert.pem, key.pem, the certificate as PEM text) for `host` (test-only: `cryptography`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return folder / "cert.pem", folder / "key.pem", pem.decode()


@contextmanager
def tls_server(
    host: str, folder: Path, routes: dict[str, tuple[int, bytes]], redirects: dict[str, str] | None = None
) -> Iterator[tuple[int, ssl.SSLContext, Counter]]:
    """Serve `routes` ({path: (status, body)}) and `redirects` ({path: location}) over HTTPS; yields
    (port, a client context trusting the certificate, hits per path)."""
    cert, key, pem = self_signed(host, folder)
    hits: Counter = Counter()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits[self.path] += 1
            if self.path in (redirects or {}):
                self.send_response(302)
                self.send_header("Location", redirects[self.path])
                self.end_headers()
                return
            status, data = routes.get(self.path, (404, b""))
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], ssl.create_default_context(cadata=pem), hits
    finally:
        server.shutdown()
        server.server_close()
