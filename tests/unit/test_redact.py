"""redact(): the one scrubber of logs and operator-facing error texts."""

from __future__ import annotations

import pytest

from simplu_grpc.redact import REDACTED, dsn_target, normalize_dsn, redact

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


def test_prose_about_bearer_tokens_is_not_mangled() -> None:
    """Only credential-shaped values after "bearer" are masked: the auth error stays readable."""
    message = "the bearer token is not a JWT (expected three base64url parts)"
    assert redact(message) == message
    assert redact("Bearer 0a1b2c") == f"Bearer {REDACTED}"
    assert redact("bearer abcdefghijklmnopqrstuvwxyz") == f"bearer {REDACTED}"


def test_a_raw_at_sign_in_a_url_password_leaves_no_part_of_it() -> None:
    """``user:left@right@host``: the whole password up to the last "@" is masked."""
    assert redact("postgresql://app:left-pw@right-pw@db:5432/x") == "postgresql://app:***@db:5432/x"


def test_a_connection_string_given_as_secret_hides_its_password_pieces() -> None:
    """libpq's "failed to resolve host 'right-pw@db'" holds the tail of a misread password."""
    dsn = "postgresql://app:left-pw@right-pw@db:5432/x"
    cleaned = redact("failed to resolve host 'right-pw@db'; tried left-pw", secrets=(dsn,))
    assert "right-pw" not in cleaned
    assert "left-pw" not in cleaned


def test_normalize_dsn_encodes_a_raw_at_sign_and_refuses_bad_ports() -> None:
    """The password runs to the last "@" and is percent-encoded; a port must be 1-65535."""
    assert normalize_dsn("postgresql://app:left@right@db:5432/x") == "postgresql://app:left%40right@db:5432/x"
    already = "postgresql://app:left%40right@db:5432/x"
    assert normalize_dsn(already) == already
    assert normalize_dsn("postgresql://db1:5432,db2:5433/x") == "postgresql://db1:5432,db2:5433/x"
    assert normalize_dsn("host=db port=5432 dbname=x") == "host=db port=5432 dbname=x"
    for bad in (
        "postgresql://app:pw@db:notaport/x",
        "postgresql://app:pw@[::1]:99999/x",
        "postgresql://app:pw@db:0/x",
        "host=db port=54x",
    ):
        with pytest.raises(ValueError, match="port") as caught:
            normalize_dsn(bad)
        assert "pw" not in str(caught.value)


def test_dsn_target_never_raises() -> None:
    """A malformed port still gives a description (it is called while logging a pool change)."""
    assert dsn_target("postgresql://app:pw@db:notaport/x") == "db:notaport/x"
    assert dsn_target("postgresql://app:left@right@db/x") == "db:5432/x"
    assert dsn_target("host=db dbname=x") == "db:5432/x"
