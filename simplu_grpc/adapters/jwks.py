"""Cognito JWKS client: the pool's signing keys by kid, fetched over keep-alive HTTP and cached.

The key set is loaded once at start and refetched only when a token names a kid we do not
know (Cognito publishes a new key before it signs with it), at most once per
``min_refetch_interval`` so a flood of forged kids cannot turn into a flood of fetches. A
failed fetch keeps the keys we had: an unreachable JWKS endpoint must not log everyone out.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from simplu_grpc import context
from simplu_grpc.errors import Unavailable
from simplu_grpc.metrics import Metrics

log = logging.getLogger(__name__)

DEPENDENCY = "jwks"
JWKS_UNAVAILABLE = "JWKS_UNAVAILABLE"

# A Cognito key set is two keys (~1 KiB); anything far larger is not a key set.
_MAX_BODY_BYTES = 256 * 1024
# The only key kind Cognito publishes and the only one the verifier accepts.
_KEY_TYPE = "RSA"
_ALGORITHM = "RS256"


class JwksFetchError(Exception):
    """One fetch of the key set failed; ``outcome`` is the metric label (timeout, http_503, ...)."""

    def __init__(self, message: str, *, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class JwksClient:
    """The signing keys of one JWKS URL, by kid; thread-safe; ``close()`` releases the HTTP pool."""

    def __init__(
        self,
        *,
        url: str,
        timeout_seconds: float,
        metrics: Metrics,
        min_refetch_interval: float = 10.0,
        http: urllib3.PoolManager | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"JWKS url must be http(s), got {url!r}")
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds}")
        if min_refetch_interval < 0:
            raise ValueError(f"min_refetch_interval must be >= 0, got {min_refetch_interval}")
        self.url = url
        self._timeout = timeout_seconds
        self._metrics = metrics
        self._min_refetch_interval = min_refetch_interval
        self._clock = clock
        self._owns_http = http is None
        # One small keep-alive pool: every fetch goes to the same host, one at a time.
        self._http = http or urllib3.PoolManager(num_pools=1, maxsize=2, retries=False)
        # Replaced wholesale on each successful fetch, so readers never need the lock.
        self._keys: Mapping[str, PyJWK] = {}
        # Serialises fetches: when many RPCs meet a new kid at once, one fetches, the rest
        # wait and then find the key (or find the refetch budget spent).
        self._fetch_lock = threading.Lock()
        self._last_refetch: float | None = None
        self.last_error: str | None = None

    # --- public -------------------------------------------------------------------------

    def load(self) -> bool:
        """Fetch the key set at start; a failure is logged, not raised (the first unknown kid retries)."""
        with self._fetch_lock:
            try:
                self._fetch("load")
            except JwksFetchError as exc:
                log.warning("JWKS not loaded at start from %s: %s (will retry on first token)", self.url, exc)
                return False
        return True

    @property
    def has_keys(self) -> bool:
        """Whether any key set was ever loaded (False: the endpoint has not answered yet)."""
        return bool(self._keys)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def get_key(self, kid: str) -> PyJWK | None:
        """The key for ``kid``; an unknown kid refetches the set, at most once per interval."""
        key = self._keys.get(kid)
        if key is not None:
            self._metrics.cache_lookup("jwks", "hit")
            return key
        self._metrics.cache_lookup("jwks", "miss")
        with self._fetch_lock:
            # Another thread may have fetched while this one waited for the lock.
            key = self._keys.get(kid)
            if key is not None:
                return key
            now = self._clock()
            if self._last_refetch is not None and now - self._last_refetch < self._min_refetch_interval:
                return None
            self._last_refetch = now
            try:
                self._fetch("refetch")
            except JwksFetchError as exc:
                log.warning("JWKS refetch for an unknown kid failed (%s); keeping the old keys", exc)
                return None
            return self._keys.get(kid)

    def probe(self, timeout_seconds: float | None = None) -> None:
        """Fetch the key set now (for dependency status); raise Unavailable if that fails.

        ``timeout_seconds`` bounds this one fetch below the configured timeout (a status page
        that checks every dependency wants a short answer). It neither waits for a refetch in
        progress nor replaces the cached keys: a probe only observes.
        """
        try:
            self._fetch("probe", timeout_seconds, keep=False)
        except JwksFetchError as exc:
            raise Unavailable(f"JWKS endpoint {self.url}: {exc}", reason=JWKS_UNAVAILABLE) from exc

    def close(self) -> None:
        if self._owns_http:
            self._http.clear()

    # --- internals ----------------------------------------------------------------------

    def _fetch(self, operation: str, timeout_seconds: float | None = None, *, keep: bool = True) -> None:
        """One GET of the key set; with ``keep`` (caller holds the lock) the keys are replaced on success."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            keys = self._parse(self._get(timeout_seconds))
            if keep:
                self._keys = keys
            self.last_error = None
        except JwksFetchError as exc:
            outcome = exc.outcome
            self.last_error = str(exc)
            raise
        finally:
            self._metrics.dependency_call(DEPENDENCY, operation, outcome, time.perf_counter() - started)

    def _get(self, timeout_seconds: float | None) -> bytes:
        # Never wait longer than the RPC that needs the key may wait.
        budget = min(self._timeout, context.deadline().remaining())
        if timeout_seconds is not None:
            budget = min(budget, timeout_seconds)
        budget = max(0.05, budget)
        try:
            response = self._http.request(
                "GET",
                self.url,
                headers={"Accept": "application/json"},
                timeout=urllib3.Timeout(connect=budget, read=budget),
                retries=False,
                preload_content=False,
            )
        except urllib3.exceptions.NewConnectionError as exc:
            # Checked first: urllib3 makes it a subclass of ConnectTimeoutError for history's sake.
            raise JwksFetchError("refused the connection", outcome="connect_error") from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise JwksFetchError(f"timed out after {budget:.2f}s", outcome="timeout") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise JwksFetchError(f"unreachable ({type(exc).__name__})", outcome="connect_error") from exc
        complete = False
        try:
            body = response.read(_MAX_BODY_BYTES + 1)
            complete = len(body) <= _MAX_BODY_BYTES
        except urllib3.exceptions.HTTPError as exc:
            raise JwksFetchError(f"read failed ({type(exc).__name__})", outcome="read_error") from exc
        finally:
            if not complete:
                # Unread bytes left on the wire: this connection cannot be reused.
                response.close()
            response.release_conn()
        if response.status != 200:
            raise JwksFetchError(f"answered HTTP {response.status}", outcome=f"http_{response.status}")
        if not complete:
            raise JwksFetchError(f"answered more than {_MAX_BODY_BYTES} bytes", outcome="invalid")
        return body

    @staticmethod
    def _parse(body: bytes) -> dict[str, PyJWK]:
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise JwksFetchError("answered something that is not JSON", outcome="invalid") from exc
        raw_keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(raw_keys, list):
            raise JwksFetchError('answered JSON without a "keys" list', outcome="invalid")
        keys: dict[str, PyJWK] = {}
        for raw in raw_keys:
            parsed = _usable_key(raw)
            if parsed is not None:
                keys[parsed[0]] = parsed[1]
        if not keys:
            raise JwksFetchError("answered a key set with no usable RS256 signing key", outcome="invalid")
        return keys


def _usable_key(raw: Any) -> tuple[str, PyJWK] | None:
    """(kid, key) for an RSA signing key; None for anything else (encryption keys, other types)."""
    if not isinstance(raw, dict):
        return None
    kid = raw.get("kid")
    if not isinstance(kid, str) or not kid:
        return None
    if raw.get("kty") != _KEY_TYPE or raw.get("use", "sig") != "sig":
        return None
    if raw.get("alg", _ALGORITHM) != _ALGORITHM:
        return None
    try:
        return kid, PyJWK(raw, algorithm=_ALGORITHM)
    except (PyJWTError, ValueError, TypeError) as exc:
        log.warning("JWKS key %r skipped: %s", kid, exc)
        return None
