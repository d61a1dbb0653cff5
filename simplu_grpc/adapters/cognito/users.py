"""The user pool's admin API (Cognito, boto3 ``cognito-idp``): find or create a user by e-mail.

Used by invitations (``domain.business.invitation_model.UserDirectory``). ``ListUsers`` with an
``email = "..."`` filter finds the user (only a verified address counts: see ``_verified_sub``);
when there is none, ``AdminCreateUser`` creates one with
the e-mail as username and as a verified attribute, and Cognito mails them a temporary password
(its invitation message): the person who signs in with it has proved they read that mailbox.
Library errors stop here: throttling, an unreachable endpoint or missing permissions become
UNAVAILABLE (USER_DIRECTORY_UNAVAILABLE); a malformed address INVALID_ARGUMENT.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

import boto3
import botocore.config
import botocore.exceptions

from simplu_grpc import context
from simplu_grpc.adapters.aws_credentials import emulator_credentials
from simplu_grpc.errors import FailedPrecondition, InvalidArgument, Unavailable
from simplu_grpc.metrics import Metrics

if TYPE_CHECKING:
    from mypy_boto3_cognito_idp import CognitoIdentityProviderClient

    from simplu_grpc.settings import Settings

log = logging.getLogger(__name__)

USER_DIRECTORY_UNAVAILABLE: Final = "USER_DIRECTORY_UNAVAILABLE"
# ListUsers' largest page: enough to see every user sharing an address.
_LIST_LIMIT = 60


def make_cognito_client(settings: Settings) -> CognitoIdentityProviderClient:
    """A ``cognito-idp`` client (``COGNITO_ENDPOINT`` for a local emulator, else AWS's own)."""
    seconds = settings.dynamodb_timeout_ms / 1000.0
    config = botocore.config.Config(
        connect_timeout=seconds,
        read_timeout=seconds,
        retries={"mode": "standard", "total_max_attempts": 2},
    )
    session = boto3.session.Session(region_name=settings.aws_region)
    key_id, secret = emulator_credentials(session, settings.cognito_endpoint)
    client: CognitoIdentityProviderClient = session.client(
        "cognito-idp",
        endpoint_url=settings.cognito_endpoint,
        config=config,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )
    return client


class CognitoUsers:
    """``find_or_create(email)`` against one user pool."""

    def __init__(self, *, client: CognitoIdentityProviderClient, pool_id: str, metrics: Metrics) -> None:
        if not pool_id:
            raise ValueError("pool_id must not be empty")
        self._client = client
        self._pool = pool_id
        self._metrics = metrics

    def find_or_create(self, email: str) -> tuple[str, bool]:
        found = self._find(email)
        if found:
            return found, False
        try:
            created = self._call(
                "admin_create_user",
                self._client.admin_create_user,
                UserPoolId=self._pool,
                Username=email,
                UserAttributes=[
                    {"Name": "email", "Value": email},
                    {"Name": "email_verified", "Value": "true"},
                ],
                DesiredDeliveryMediums=["EMAIL"],
            )
        except _UsernameExists:
            # Created meanwhile (a concurrent invitation), or a user whose username is this address.
            found = self._find(email)
            if found:
                return found, False
            user = self._call(
                "admin_get_user", self._client.admin_get_user, UserPoolId=self._pool, Username=email
            )
            return _verified_sub([user.get("UserAttributes", [])], email), False
        return _sub(created["User"].get("Attributes", [])), True

    def _find(self, email: str) -> str:
        """The sub of the one user with this e-mail verified; "" when no user has it at all."""
        # The domain refuses '"' and '\\' in addresses, so the filter cannot be broken out of.
        answer = self._call(
            "list_users",
            self._client.list_users,
            UserPoolId=self._pool,
            Filter=f'email = "{email}"',
            Limit=_LIST_LIMIT,
        )
        users = [user.get("Attributes", []) for user in answer.get("Users", [])]
        return _verified_sub(users, email) if users else ""

    def _call(self, operation: str, method: Any, /, **kwargs: Any) -> Any:
        context.deadline().check(f"calling Cognito ({operation})")
        started = time.perf_counter()
        outcome = "ok"
        try:
            return method(**kwargs)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            outcome = "error"
            if code == "UsernameExistsException":
                outcome = "exists"
                raise _UsernameExists() from exc
            if code == "InvalidParameterException":
                raise InvalidArgument.field("email", "is not an address the user pool accepts") from exc
            log.warning("cognito %s failed: %s", operation, code)
            raise Unavailable(
                f"the user pool is unavailable ({code})", reason=USER_DIRECTORY_UNAVAILABLE
            ) from exc
        except botocore.exceptions.BotoCoreError as exc:
            outcome = "unreachable"
            log.warning("cognito %s failed: %s", operation, type(exc).__name__)
            raise Unavailable(
                f"the user pool is unreachable ({type(exc).__name__})", reason=USER_DIRECTORY_UNAVAILABLE
            ) from exc
        finally:
            self._metrics.dependency_call("cognito", operation, outcome, time.perf_counter() - started)


class _UsernameExists(Exception):
    """AdminCreateUser found the username taken (internal: find_or_create looks it up instead)."""


def _verified_sub(users: list[list[Any]], email: str) -> str:
    """The sub of the one user (by attributes) whose e-mail is ``email`` and verified.

    Only a verified address counts: in a pool that lets people sign up, anyone can claim an
    address they do not own, and an invitation bound to their sub would hand them the membership.
    """
    verified = [
        attributes
        for attributes in users
        if _attribute(attributes, "email").lower() == email
        and _attribute(attributes, "email_verified") == "true"
    ]
    if len(verified) > 1:
        raise FailedPrecondition(
            "several users of the user pool have this e-mail; add the right one with SetMember",
            reason="INVITEE_AMBIGUOUS",
        )
    if not verified:
        raise FailedPrecondition(
            "a user of the user pool has this e-mail but has not verified it; they verify it "
            "first (or an administrator does), then invite them again",
            reason="INVITEE_UNVERIFIED",
        )
    return _sub(verified[0])


def _attribute(attributes: list[Any], name: str) -> str:
    return next((str(a.get("Value", "")) for a in attributes if a.get("Name") == name), "")


def _sub(attributes: list[Any]) -> str:
    for attribute in attributes:
        if attribute.get("Name") == "sub":
            return str(attribute["Value"])
    raise ValueError("the user pool answered a user without a sub")
