"""Cognito JWKS client: the pool's signing keys by kid, fetched over keep-alive HTTP and cached.

The key set is loaded once at start and refetched only when a token names a kid we do not
know (Cognito publishes a new key before it signs with it), at most once per
``min_refetch_interval`` so a flood of forged kids cannot turn into a flood of fetches. A
failed fetch keeps the keys we had: an unreachable JWKS endpoint must not log everyone out.

A failed refetch is an outage, not an answer: the token's kid is then Unavailable
(JWKS_UNAVAILABLE), never "unknown key". It does not spend the refetch allowance, so the
first call after the endpoint recovers fetches again; failed attempts are themselves spaced
(at most one per second) so a dead endpoint is not stampeded. The fetch uses the client's
own timeout on its own thread (it serves every waiter), and each waiter, the RPC that
triggered it included, gives up at its deadline.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import urllib3
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from simplu_grpc import context
from simplu_grpc.errors import DeadlineExceeded, Unavailable
from simplu_grpc.metrics import Metrics

log = logging.getLogger(__name__)

DEPENDENCY = "jwks"
JWKS_UNAVAILABLE: Final = "JWKS_UNAVAILABLE"

# A Cognito key set is two keys (~1 KiB); anything far larger is not a key set.
_MAX_BODY_BYTES = 256 * 1024
# The only key kind Cognito publishes and the only one the verifier accepts.
_KEY_TYPE = "RSA"
_ALGORITHM = "RS256"
# After a failed fetch the next attempt waits this long, so a dead endpoint is not stampeded;
# a failure does not spend the (much longer) refetch allowance, so recovery is immediate.
_FAILED_RETRY_SECONDS = 1.0
# A fetch serves every RPC waiting for it, so it gets the client's timeout, never less than this.
_MIN_FETCH_SECONDS = 0.05


class JwksFetchError(Exception):
    """One fetch of the key set failed; ``outcome`` is the metric label (timeout, http_503, ...)."""

    def __init__(self, message: str, *, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class _Refetch:
    """A refetch in progress; callers that met an unknown kid wait on ``done``."""

    __slots__ = ("done", "failed", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.done = threading.Event()
        self.failed = False


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
        # Serialises fetches (load, refetches); never held by an RPC's thread.
        self._fetch_lock = threading.Lock()
        # Guards the refetch bookkeeping below: when many RPCs meet a new kid at once, one
        # refetch starts and every one of them waits for it (up to its deadline).
        self._state_lock = threading.Lock()
        self._refetch: _Refetch | None = None
        # When a refetch last succeeded (the allowance) and when a fetch last failed (the backoff).
        self._last_refetch: float | None = None
        self._last_failure: float | None = None
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
        """The key for ``kid``; an unknown kid refetches the set, at most once per interval.

        None means the key set was fetched successfully (now or within the interval) and does
        not hold ``kid``. Unavailable(JWKS_UNAVAILABLE) means we could not find out: the refetch
        failed, or the last fetch failed and the next attempt is still being held back.
        DeadlineExceeded when the RPC's deadline passes before the refetch answers: the refetch
        runs on its own thread with the client's timeout (it serves every waiter), and each
        caller waits for it no longer than its own deadline.
        """
        key = self._keys.get(kid)
        if key is not None:
            self._metrics.cache_lookup("jwks", "hit")
            return key
        self._metrics.cache_lookup("jwks", "miss")
        with self._state_lock:
            # Another thread may have fetched while this one looked.
            key = self._keys.get(kid)
            if key is not None:
                return key
            refetch = self._refetch
            if refetch is None:
                now = self._clock()
                last_failure = self._last_failure
                if last_failure is not None and now - last_failure < _FAILED_RETRY_SECONDS:
                    raise self._unavailable()
                if self._last_refetch is not None and now - self._last_refetch < self._min_refetch_interval:
                    if last_failure is not None:
                        raise self._unavailable()
                    return None
                refetch = self._refetch = _Refetch(started=now)
                # One thread per refetch: they are rate-limited above (one a second at most).
                threading.Thread(
                    target=self._run_refetch, args=(refetch,), name="jwks-refetch", daemon=True
                ).start()
        if not refetch.done.wait(timeout=context.deadline().remaining()):
            raise DeadlineExceeded("deadline exceeded while waiting for the JWKS refetch")
        key = self._keys.get(kid)
        if key is None and refetch.failed:
            raise self._unavailable()
        return key

    def _run_refetch(self, refetch: _Refetch) -> None:
        failed = False
        try:
            with self._fetch_lock:
                self._fetch("refetch")
        except JwksFetchError as exc:
            failed = True
            log.warning("JWKS refetch for an unknown kid failed (%s); keeping the old keys", exc)
        except Exception:
            failed = True
            log.exception("JWKS refetch crashed; keeping the old keys")
        with self._state_lock:
            if failed:
                # A failure does not spend the allowance: the next call after the backoff retries.
                self._last_failure = self._clock()
            else:
                self._last_refetch = refetch.started
                self._last_failure = None
            self._refetch = None
        refetch.failed = failed
        refetch.done.set()

    def _unavailable(self) -> Unavailable:
        return Unavailable(
            "the user pool's signing keys could not be fetched; try again shortly",
            reason=JWKS_UNAVAILABLE,
        )

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
        # The client's own timeout, not the remaining deadline of whichever RPC happened to
        # trigger the fetch: the result serves every waiter (they stop waiting at their deadline).
        budget = self._timeout
        if timeout_seconds is not None:
            budget = min(budget, timeout_seconds)
        budget = max(_MIN_FETCH_SECONDS, budget)
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
