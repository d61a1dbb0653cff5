"""redact(): the one scrubber of logs and operator-facing error texts."""

from __future__ import annotations

from simplu_grpc.redact import REDACTED, redact

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXZhbHVl"


def test_every_kind_of_secret_is_masked() -> None:
    """URL and key=value passwords, JWT-shaped tokens, bearer credentials and given secrets."""
    text = (
        f"postgresql://app:url-pw-1@db:5432/x host=db password='kv pw 2' token {JWT} "
        "authorization: Bearer opaque-cred-3 api key citrus-key-4"
    )
    cleaned = redact(text, secrets=("citrus-key-4", ""))
    for secret in ("url-pw-1", "kv pw 2", JWT, "opaque-cred-3", "citrus-key-4"):
        assert secret not in cleaned
    assert "postgresql://app:***@db:5432/x" in cleaned
    assert "[token]" in cleaned
    assert f"Bearer {REDACTED}" in cleaned


def test_help_texts_about_the_bearer_scheme_are_kept() -> None:
    """The auth errors' own guidance is not a credential and stays readable."""
    for text in (
        "send metadata 'authorization: Bearer <JWT>'",
        "the 'authorization' metadata must use the Bearer scheme: 'Bearer <JWT>'",
    ):
        assert redact(text) == text


def test_an_empty_secret_changes_nothing() -> None:
    assert redact("nothing secret here", secrets=("",)) == "nothing secret here"
