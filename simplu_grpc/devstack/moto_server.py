"""moto in server mode for local runs and tests: DynamoDB and Cognito over real HTTP, real boto3.

``MotoServer`` runs ``python -m moto.server`` as a child process in its own process group
(so ``stop()`` leaves nothing behind). The helpers below create what simplu-grpc needs in
it: the business-info table, and a Cognito user pool with an app client, an ``admin``
group, an admin user and a plain user whose tokens are real RS256 JWTs. moto signs every
pool's tokens with one fixed key (kid ``dummy``) served at
``{endpoint}/{pool_id}/.well-known/jwks.json``; the issuer is the real Cognito URL.

Development and test tooling only: production code never imports this module.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import boto3
import urllib3
from botocore.config import Config
from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

# moto accepts any credentials; explicit dummy ones keep boto3 away from real AWS credentials.
_DUMMY_KEY_ID = "testing"
_DUMMY_SECRET = "testing"
_BOTO_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})
_START_TIMEOUT_SECONDS = 60.0
_STOP_TIMEOUT_SECONDS = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it; a tiny race remains until it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class MotoServer:
    """One ``moto.server`` child process; ``start()`` returns once it answers HTTP."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port == 0:
            raise RuntimeError("MotoServer has no port yet: call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> MotoServer:
        """Start (or restart, on the same port) and wait until it answers; raise RuntimeError if not."""
        if self.running:
            return self
        if self.port == 0:
            self.port = free_port(self.host)
        # werkzeug logs every request to stderr: a file, not a pipe nobody drains.
        # Open as long as the child runs (no with-block can span that); closed in stop().
        self._log = tempfile.TemporaryFile(prefix="moto-server-")  # noqa: SIM115 - outlives any with-block
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() kills the whole group
        )
        try:
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise
        log.info("moto server running at %s (pid %d)", self.url, self._process.pid)
        return self

    def stop(self) -> None:
        """Terminate the process group (kill after a grace period); idempotent."""
        process, self._process = self._process, None
        if process is not None:
            _stop_group(process)
        if self._log is not None:
            self._log.close()
            self._log = None

    def output_tail(self, limit: int = 4000) -> str:
        """The end of moto's own output, for error messages."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - limit))
        return self._log.read().decode("utf-8", "replace")

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_until_answering(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        http = urllib3.PoolManager(retries=False)
        try:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"moto server exited with code {self._process.returncode} before answering:\n"
                        f"{self.output_tail()}"
                    )
                try:
                    # Any HTTP answer means the server is up; this path is a cheap 404.
                    http.request("GET", f"{self.url}/moto-api/ping", timeout=1.0)
                    return
                except urllib3.exceptions.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    waited = f"{_START_TIMEOUT_SECONDS:.0f}s"
                    raise RuntimeError(f"moto server did not answer within {waited}:\n{self.output_tail()}")
                time.sleep(0.05)
        finally:
            http.clear()


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL it if it lingers, and reap the child."""
    # Signals go to the group only while the leader is unreaped: once reaped, its pid (and
    # so the group id) could belong to someone else's process.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            continue


# --- AWS resources -----------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def client(service: str, endpoint: str, region: str) -> Any:
    """A boto3 client for ``service`` talking to moto at ``endpoint`` with dummy credentials.

    Cached: building a client loads the service model (~100 ms); clients are thread-safe.
    """
    session = boto3.session.Session(
        region_name=region, aws_access_key_id=_DUMMY_KEY_ID, aws_secret_access_key=_DUMMY_SECRET
    )
    return session.client(service, endpoint_url=endpoint, config=_BOTO_CONFIG)  # type: ignore[call-overload]  # service is a runtime string


def create_business_table(endpoint: str, region: str, table: str) -> None:
    """Create the business-info table (partition key ``id``, the sparse membership index
    ``member-index`` on ``memberSub`` + ``memberOf``, the search index ``name-index`` on
    ``searchType`` + ``searchName``); an existing table is left alone."""
    dynamodb = client("dynamodb", endpoint, region)
    try:
        dynamodb.create_table(
            TableName=table,
            AttributeDefinitions=[
                {"AttributeName": "id", "AttributeType": "S"},
                {"AttributeName": "memberSub", "AttributeType": "S"},
                {"AttributeName": "memberOf", "AttributeType": "S"},
                {"AttributeName": "searchType", "AttributeType": "S"},
                {"AttributeName": "searchName", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            # Keys only: a person's listing needs the business ids, then reads the businesses.
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "member-index",
                    "KeySchema": [
                        {"AttributeName": "memberSub", "KeyType": "HASH"},
                        {"AttributeName": "memberOf", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                },
                # SearchBusinesses: by type, then folded name prefix; ALL so a page is one Query.
                {
                    "IndexName": "name-index",
                    "KeySchema": [
                        {"AttributeName": "searchType", "KeyType": "HASH"},
                        {"AttributeName": "searchName", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                },
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    # Idempotency markers carry expiresAt; as in production, the table expires them by TTL.
    ttl = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in {"ENABLED", "ENABLING"}:
        dynamodb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"}
        )


@dataclass(frozen=True)
class CognitoSetup:
    """What ``setup_cognito`` created: ids, the two users and their passwords."""

    pool_id: str
    client_id: str
    admin_username: str
    admin_password: str = field(repr=False)
    user_username: str
    user_password: str = field(repr=False)
    admin_sub: str
    user_sub: str
    endpoint: str = ""
    region: str = "us-east-1"
    admin_group: str = "admin"

    @property
    def issuer(self) -> str:
        """The ``iss`` of this pool's tokens (moto uses the real Cognito URL)."""
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.pool_id}"

    @property
    def jwks_url(self) -> str:
        """Where moto serves the pool's signing keys."""
        return f"{self.endpoint}/{self.pool_id}/.well-known/jwks.json"


@dataclass(frozen=True)
class Tokens:
    """One sign-in's tokens (never printed by repr)."""

    access: str = field(repr=False)
    id: str = field(repr=False)


def _new_password() -> str:
    # Meets Cognito's default policy: upper, lower, digit, symbol, length >= 8.
    return f"Sp-{secrets.token_urlsafe(12)}-9a"


def setup_cognito(
    endpoint: str,
    region: str,
    *,
    pool_name: str = "simplu-dev",
    admin_username: str = "admin",
    user_username: str = "user",
    admin_group: str = "admin",
) -> CognitoSetup:
    """Create a user pool, an app client (password sign-in), the admin group, an admin and a user."""
    cognito = client("cognito-idp", endpoint, region)
    pool_id: str = cognito.create_user_pool(PoolName=pool_name)["UserPool"]["Id"]
    client_id: str = cognito.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="simplu-grpc",
        GenerateSecret=False,
        ExplicitAuthFlows=[
            "ALLOW_USER_PASSWORD_AUTH",
            "ALLOW_ADMIN_USER_PASSWORD_AUTH",
            "ALLOW_REFRESH_TOKEN_AUTH",
        ],
    )["UserPoolClient"]["ClientId"]
    cognito.create_group(UserPoolId=pool_id, GroupName=admin_group, Description="simplu platform admins")
    base = CognitoSetup(
        pool_id=pool_id,
        client_id=client_id,
        admin_username=admin_username,
        admin_password="",
        user_username=user_username,
        user_password="",
        admin_sub="",
        user_sub="",
        endpoint=endpoint,
        region=region,
        admin_group=admin_group,
    )
    admin_sub, admin_password = create_user(endpoint, region, base, admin_username, groups=[admin_group])
    user_sub, user_password = create_user(endpoint, region, base, user_username)
    return CognitoSetup(
        pool_id=pool_id,
        client_id=client_id,
        admin_username=admin_username,
        admin_password=admin_password,
        user_username=user_username,
        user_password=user_password,
        admin_sub=admin_sub,
        user_sub=user_sub,
        endpoint=endpoint,
        region=region,
        admin_group=admin_group,
    )


def create_user(
    endpoint: str,
    region: str,
    setup: CognitoSetup,
    username: str,
    groups: Iterable[str] = (),
    *,
    password: str | None = None,
) -> tuple[str, str]:
    """Create a confirmed user with a permanent password in ``groups``; return (sub, password)."""
    cognito = client("cognito-idp", endpoint, region)
    password = password or _new_password()
    created = cognito.admin_create_user(
        UserPoolId=setup.pool_id,
        Username=username,
        MessageAction="SUPPRESS",
        UserAttributes=[
            {"Name": "email", "Value": f"{username}@example.com"},
            {"Name": "email_verified", "Value": "true"},
        ],
    )
    cognito.admin_set_user_password(
        UserPoolId=setup.pool_id, Username=username, Password=password, Permanent=True
    )
    for group in groups:
        cognito.admin_add_user_to_group(UserPoolId=setup.pool_id, Username=username, GroupName=group)
    attributes = {a["Name"]: a["Value"] for a in created["User"]["Attributes"]}
    return attributes["sub"], password


def issue_tokens(endpoint: str, region: str, setup: CognitoSetup, username: str, password: str) -> Tokens:
    """Sign in as a user the way an app does (USER_PASSWORD_AUTH) and return its tokens."""
    cognito = client("cognito-idp", endpoint, region)
    answer = cognito.initiate_auth(
        ClientId=setup.client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": password},
    )
    result = answer.get("AuthenticationResult")
    if not result:
        raise RuntimeError(f"sign-in of {username!r} answered a challenge: {answer.get('ChallengeName')}")
    return Tokens(access=result["AccessToken"], id=result["IdToken"])
