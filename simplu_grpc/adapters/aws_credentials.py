"""Credentials for boto3 clients pointed at a local emulator (moto, DynamoDB Local)."""

from __future__ import annotations

import boto3


def emulator_credentials(
    session: boto3.session.Session, endpoint: str | None
) -> tuple[str | None, str | None]:
    """``(key id, secret)`` to pass to ``session.client``: dummy ones for a local emulator when the
    environment has none (an emulator accepts any, but boto3 refuses to sign without some; not a
    secret), else ``(None, None)``, so boto3 finds the real ones itself."""
    if endpoint and session.get_credentials() is None:
        return "local", "local"
    return None, None
