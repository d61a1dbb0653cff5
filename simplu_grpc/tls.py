"""TLS for the gRPC port: server certificate and key from files, reloaded when they change.

grpc asks ``fetch()`` before every new connection's handshake; it answers a new certificate
configuration only when one of the files changed (size or modification time), so cert-manager
or a mounted Secret can rotate the certificate without a restart. Connections already open
keep the certificate they were made with. With a client CA file, every client must present a
certificate that CA signed (mTLS).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import grpc

log = logging.getLogger(__name__)


class ReloadingCertificates:
    """The certificate configuration, read again from the files when they change."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str | None = None) -> None:
        self._files = [Path(cert_file), Path(key_file), *([Path(client_ca_file)] if client_ca_file else [])]
        self._client_ca = client_ca_file is not None
        # Guards _stamp: handshakes of several connections may ask at once.
        self._lock = threading.Lock()
        self._stamp = self._read_stamp()
        self.initial = self._configuration()

    def credentials(self) -> grpc.ServerCredentials:
        # grpc documents None as "no change"; types-grpcio's stub does not allow it.
        fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", self.fetch)
        return grpc.dynamic_ssl_server_credentials(
            self.initial, fetch, require_client_authentication=self._client_ca
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when a file changed since the last read, else None (keep it)."""
        try:
            stamp = self._read_stamp()
            with self._lock:
                if stamp == self._stamp:
                    return None
                configuration = self._configuration()
                self._stamp = stamp
        except (OSError, ValueError) as exc:
            # Half-written during a rotation, or removed: keep serving the current certificate.
            log.warning("TLS files could not be reloaded, keeping the current certificate: %s", exc)
            return None
        log.info("TLS certificate reloaded", extra={"files": [str(f) for f in self._files]})
        return configuration

    def _read_stamp(self) -> tuple[tuple[int, int], ...]:
        return tuple((s.st_mtime_ns, s.st_size) for s in (os.stat(f) for f in self._files))

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        cert, key = self._files[0].read_bytes(), self._files[1].read_bytes()
        if b"-----BEGIN" not in cert or b"-----BEGIN" not in key:
            raise ValueError("the certificate and the key must be PEM files")
        root = self._files[2].read_bytes() if self._client_ca else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=root)
