"""Citrus shard-server client (DESIGN §5): bearer key, JSON, keep-alive, bounded retries.

Policy lives here, I/O in urllib3: one ``PoolManager`` keeps connections alive across calls
(the seam for tests is the ``http`` argument). Each attempt gets at most ``timeout_ms`` and
never more than the RPC's remaining deadline; transient failures (connect errors, timeouts,
429, 5xx) are retried with jittered exponential backoff (tenacity) for at most
``retry_attempts`` attempts and never past the deadline. Every failure becomes
``CitrusUnavailable``; a 404 on a lookup is an answer (``None``), not a failure.

What this client assumes of the real Citrus server for location moves (issue 13) — the one
place these assumptions are written down:

* ``PUT /api/shard/{businessId-locationId}`` (URL-encoded key) with ``{"shardId": "<id>"}`` places
  an already registered location on that shard and answers the new CitrusShardResponse; from then
  on every ``GET /api/shard/{key}`` (from any replica) names that shard. 404 = the key is not
  registered or the shard is unknown. The call is idempotent (placing it where it is changes
  nothing) and Citrus keeps the shard's ``businessCount`` right by itself.
* ``GET /api/shard/{shardId}/capacity``'s ``canAcceptNewBusiness`` is what a move checks before it
  starts (a full or inactive target refuses the move).
* Citrus does not move data: the service copies it, then calls ``place`` at the switch.
The emulator (devstack/citrus_emulator.py) implements exactly this.

Connection strings in responses are secrets: they travel in ``ShardAssignment`` (excluded
from its repr) and never appear in a log line or an error message; neither does the API key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import tenacity
import urllib3

from simplu_grpc import context, tracing
from simplu_grpc.adapters.citrus import wire
from simplu_grpc.adapters.postgres.shard_tls import ShardTlsPolicy
from simplu_grpc.adapters.retry import MIN_ATTEMPT_SECONDS, StopAtDeadline
from simplu_grpc.domain.placement.shards import CapacityInfo, ShardAssignment
from simplu_grpc.errors import CitrusUnavailable, ShardUnavailable
from simplu_grpc.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

# A shard id no Citrus has (its capacity lookup is the cheapest authenticated call).
_PROBE_SHARD_ID = "simplu-readiness-probe"
# No Citrus answer is anywhere near this big (a health list of a thousand shards is ~300 KB).
_MAX_BODY_BYTES = 4 * 1024 * 1024


class _HttpStatusError(Exception):
    """A non-2xx answer; ``transient`` for 429 and 5xx (worth retrying)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status == 429 or self.status >= 500


class _SlowAnswer(urllib3.exceptions.TimeoutError):
    """The answer kept coming for longer than one attempt may take (a timeout, so retried)."""


class _MalformedResponse(Exception):
    """Citrus answered 2xx with a body that is not the documented JSON."""


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _HttpStatusError):
        return exc.transient
    return isinstance(
        exc,
        urllib3.exceptions.TimeoutError
        | urllib3.exceptions.NewConnectionError
        | urllib3.exceptions.ProtocolError
        | ConnectionError,
    )


def _outcome(exc: BaseException) -> str:
    """A bounded metric label for a failed attempt."""
    if isinstance(exc, _HttpStatusError):
        return "http_429" if exc.status == 429 else f"http_{exc.status // 100}xx"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return "connect_error"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return "timeout"
    if isinstance(exc, _MalformedResponse):
        return "malformed"
    return "error"


class CitrusClient:
    """Talks to the Citrus shard server; thread-safe (urllib3 pools are)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout_ms: int,
        retry_attempts: int,
        metrics: Metrics,
        http: urllib3.PoolManager | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff_max_seconds: float = 2.0,
        pool_maxsize: int = 16,
        tls: ShardTlsPolicy = ShardTlsPolicy(),
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        if not api_key:
            raise ValueError("api_key must not be empty")
        if timeout_ms <= 0:
            raise ValueError("timeout_ms must be positive")
        if retry_attempts < 1:
            raise ValueError("retry_attempts must be at least 1")
        self._base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        self._timeout = timeout_ms / 1000.0
        self._attempts = retry_attempts
        self._metrics = metrics
        # The shards' TLS floor, put into every connection string Citrus hands out.
        self._tls = tls
        self._sleep = sleep
        self._backoff_max = backoff_max_seconds
        # retries=False: tenacity owns the retry policy; urllib3 must not retry underneath it.
        # maxsize bounds the idle sockets kept open to Citrus; a burst beyond it opens
        # short-lived extra connections rather than queueing (block=False).
        self._http = http or urllib3.PoolManager(
            num_pools=4, maxsize=pool_maxsize, block=False, retries=False
        )

    # --- the four endpoints of DESIGN §5, and place (location moves) ------------------------

    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None:
        """The shard of a registered business+location, or None when Citrus does not know it."""
        key = quote(f"{business_id}-{location_id}", safe="")
        body = self._call("get_shard", "GET", f"/api/shard/{key}", none_on_404=True)
        return (
            None if body is None else self._secured(self._seen(wire.assignment(body, operation="get_shard")))
        )

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        """Register a business+location (idempotent at Citrus); ``business_type`` like ``dental``."""
        payload = {
            "businessId": business_id,
            "locationId": location_id,
            "businessType": business_type.lower(),
            "shardKey": f"{business_id}-{location_id}",
        }
        body = self._call("register", "POST", "/api/register", payload=payload)
        if body is None:  # pragma: no cover - none_on_404 is off, a 404 raises
            raise CitrusUnavailable("Citrus did not register the location")
        return self._secured(self._seen(wire.assignment(body, operation="register")))

    def unregister(self, business_id: str, location_id: str) -> bool | None:
        """Remove a business+location's registration: True when Citrus removed it, False when it
        had none (404), None when this Citrus offers no way to (405 or 501).

        ASSUMPTION: DESIGN §5 names no such endpoint. This client assumes the one the Citrus
        emulator serves, ``DELETE /api/shard/{businessId-locationId}`` (200 with a JSON body, or
        204), and treats 405 / 501 as "not offered", so a purge against a Citrus without it
        still completes (its registrations then stay, which only costs Citrus a stale entry).
        """
        key = quote(f"{business_id}-{location_id}", safe="")
        try:
            body = self._call("unregister", "DELETE", f"/api/shard/{key}", none_on_404=True)
        except CitrusUnavailable as exc:
            if exc.metadata.get("http_status") in {"405", "501"}:
                return None
            raise
        return body is not None

    def place(self, business_id: str, location_id: str, shard_id: str) -> ShardAssignment:
        """Route a registered business+location to ``shard_id`` (a location move's switch; see the
        module docstring for what this assumes of the server)."""
        key = quote(f"{business_id}-{location_id}", safe="")
        body = self._call("place", "PUT", f"/api/shard/{key}", payload={"shardId": shard_id})
        if body is None:  # pragma: no cover - none_on_404 is off, a 404 raises
            raise CitrusUnavailable("Citrus did not place the location")
        return self._secured(self._seen(wire.assignment(body, operation="place")))

    def shards_health(self) -> list[ShardAssignment]:
        """Every shard Citrus knows, with its health and usage."""
        body = self._call("health", "GET", "/api/shards/health")
        if not isinstance(body, list):
            raise self._malformed("health")
        listed = [
            self._seen(wire.assignment(item, operation="health", require_connection=False)) for item in body
        ]
        return [self._secured(shard, listing=True) for shard in listed]

    def _secured(self, assignment: ShardAssignment, *, listing: bool = False) -> ShardAssignment:
        """The assignment with the TLS floor in its connection string. A string below the floor
        refuses the route (UNAVAILABLE, SHARD_TLS_REFUSED); in a health listing the shard stays
        listed with no connection string, so nothing connects to it."""
        if not assignment.connection_string:
            return assignment
        try:
            secured = self._tls.secure(assignment.shard_id, assignment.connection_string)
        except ShardUnavailable as refused:
            if not listing:
                raise
            log.warning("Citrus listing: %s", refused.message)
            secured = ""
        return dataclasses.replace(assignment, connection_string=secured)

    def _seen(self, assignment: ShardAssignment) -> ShardAssignment:
        """Export what Citrus just said of the shard's capacity as gauges (near-capacity alert)."""
        self._metrics.shard_reported(
            assignment.shard_id,
            business_count=assignment.business_count,
            max_businesses=assignment.max_businesses,
        )
        return assignment

    def capacity(self, shard_id: str) -> CapacityInfo | None:
        """Whether ``shard_id`` can take another business; None for an unknown shard."""
        body = self._call(
            "capacity", "GET", f"/api/shard/{quote(shard_id, safe='')}/capacity", none_on_404=True
        )
        if body is None:
            return None
        if not isinstance(body, Mapping) or not isinstance(body.get("canAcceptNewBusiness"), bool):
            raise self._malformed("capacity")
        count = body.get("businessCount", body.get("currentBusinessCount"))
        maximum = body.get("maxBusinesses")
        return CapacityInfo(
            shard_id=str(body.get("shardId", shard_id)),
            can_accept_new_business=body["canAcceptNewBusiness"],
            business_count=count if isinstance(count, int) else None,
            max_businesses=maximum if isinstance(maximum, int) else None,
        )

    def probe(self) -> None:
        """A light call for readiness / dependency status; raises CitrusUnavailable.

        The capacity of a shard id no Citrus has: an authenticated 404 at once. ``shards_health``
        would make Citrus probe every shard on each readiness tick of every replica.
        """
        self.capacity(_PROBE_SHARD_ID)

    def close(self) -> None:
        self._http.clear()

    # --- one call, with the retry policy -----------------------------------------------

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        payload: Mapping[str, Any] | None = None,
        none_on_404: bool = False,
    ) -> Any:
        with tracing.span(
            f"citrus {operation}",
            kind=tracing.SpanKind.CLIENT,
            attributes={"http.request.method": method, "peer.service": "citrus"},
        ):
            return self._attempts_within_deadline(
                operation, method, path, payload=payload, none_on_404=none_on_404
            )

    def _attempts_within_deadline(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        payload: Mapping[str, Any] | None,
        none_on_404: bool,
    ) -> Any:
        deadline = context.deadline()
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self._attempts) | StopAtDeadline(deadline),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=self._backoff_max),
            retry=tenacity.retry_if_exception(_is_transient),
            sleep=self._sleep,
            reraise=True,
        )
        body = None if payload is None else json.dumps(payload).encode()
        try:
            return retrying(
                self._attempt,
                operation,
                method,
                path,
                body=body,
                deadline=deadline,
                none_on_404=none_on_404,
            )
        except _HttpStatusError as exc:
            if exc.status in {401, 403}:
                raise CitrusUnavailable(
                    f"Citrus refused the API key (HTTP {exc.status}); check CITRUS_API_KEY",
                    metadata={"operation": operation},
                ) from exc
            if exc.transient:
                raise CitrusUnavailable(
                    f"Citrus answered HTTP {exc.status} to {operation} (retried until the limit)",
                    metadata={"operation": operation, "http_status": str(exc.status)},
                ) from exc
            # Any other 4xx: Citrus understood and refused; retrying would not help. Never
            # echo its body (it may quote the request's secrets back).
            raise CitrusUnavailable(
                f"Citrus rejected {operation} with HTTP {exc.status}; check CITRUS_SERVER_URL and "
                "the Citrus version (not retried)",
                metadata={"operation": operation, "http_status": str(exc.status)},
            ) from exc
        except _MalformedResponse as exc:
            raise self._malformed(operation) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            kind = _outcome(exc)
            raise CitrusUnavailable(
                f"Citrus is unreachable ({kind.replace('_', ' ')}) during {operation}",
                metadata={"operation": operation},
            ) from exc

    def _attempt(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        body: bytes | None,
        deadline: context.Deadline,
        none_on_404: bool,
    ) -> Any:
        remaining = deadline.remaining()
        if remaining < MIN_ATTEMPT_SECONDS:
            raise CitrusUnavailable(
                f"no time left in the deadline to call Citrus ({operation})",
                metadata={"operation": operation},
            )
        seconds = min(self._timeout, remaining)
        started = time.perf_counter()
        try:
            response = self._http.request(
                method,
                self._base_url + path,
                body=body,
                headers=self._headers,
                timeout=urllib3.Timeout(connect=seconds, read=seconds),
                retries=False,
                redirect=False,
                preload_content=False,
            )
            # urllib3's read timeout is per socket read: a server dripping bytes could stretch an
            # attempt without end, so the body is read against this attempt's own clock.
            data = _read_body(response, until=time.monotonic() + seconds)
            if response.status == 404 and none_on_404:
                self._metrics.dependency_call("citrus", operation, "not_found", time.perf_counter() - started)
                return None
            if not 200 <= response.status < 300:
                raise _HttpStatusError(response.status)
            if response.status == 204:  # no content (an unregister may answer so)
                self._metrics.dependency_call("citrus", operation, "ok", time.perf_counter() - started)
                return {}
            try:
                parsed = json.loads(data)
            except (ValueError, RecursionError) as exc:
                raise _MalformedResponse(operation) from exc
        except Exception as exc:
            self._metrics.dependency_call("citrus", operation, _outcome(exc), time.perf_counter() - started)
            # The URL path names a tenant, never a secret; the response body is not logged.
            log.warning("citrus %s attempt failed: %s", operation, _outcome(exc))
            raise
        self._metrics.dependency_call("citrus", operation, "ok", time.perf_counter() - started)
        return parsed

    @staticmethod
    def _malformed(operation: str) -> CitrusUnavailable:
        return wire.malformed(operation)


def _read_body(response: urllib3.BaseHTTPResponse, *, until: float) -> bytes:
    """The whole body, read before ``until`` (monotonic) and within ``_MAX_BODY_BYTES``.

    On success the connection goes back to the pool (keep-alive); on failure it is closed,
    since a half-read answer would corrupt the next request on it.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            if time.monotonic() > until:
                raise _SlowAnswer("Citrus did not finish its answer within the attempt timeout")
            chunk = response.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > _MAX_BODY_BYTES:
                raise _MalformedResponse("answer too large")
            chunks.append(chunk)
    except BaseException:
        response.close()
        response.release_conn()
        raise
    response.release_conn()
    return b"".join(chunks)
