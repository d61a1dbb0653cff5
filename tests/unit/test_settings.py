"""Settings: read once from the environment; a bad value stops the start naming its variable, no secret."""

from __future__ import annotations

import dataclasses

import pytest

from simplu_grpc.settings import Settings, SettingsError

REQUIRED = {"COGNITO_USER_POOL_ID": "eu-west-1_AbCdEf", "COGNITO_CLIENT_ID": "client-a"}


def read(**env: str) -> Settings:
    return Settings.from_env({**REQUIRED, **env})


def test_defaults_follow_the_design() -> None:
    """With only the Cognito pool and client set, every other value is the documented default."""
    settings = read()
    assert settings.grpc_port == 50051
    assert settings.citrus_timeout_ms == 5000
    assert settings.citrus_retry_attempts == 3
    assert settings.dynamodb_business_info_table == "business-info"
    assert settings.admin_group == "admin"
    assert settings.workers == 1
    assert settings.grpc_reflection is True
    assert settings.single_database is True
    assert settings.cognito_client_ids == ("client-a",)
    assert settings.change_retention_seconds == 7 * 86_400
    assert settings.jwks_url == (
        "https://cognito-idp.us-east-1.amazonaws.com/eu-west-1_AbCdEf/.well-known/jwks.json"
    )


def test_values_are_read_from_the_environment() -> None:
    """Each variable lands in its field, converted; COGNITO_CLIENT_ID is a comma list."""
    settings = read(
        GRPC_PORT="6000",
        CITRUS_SERVER_URL="https://citrus.example/",
        CITRUS_API_KEY="k",
        CITRUS_TIMEOUT="750",
        AWS_REGION="eu-west-1",
        COGNITO_CLIENT_ID=" a , b ,,c ",
        COGNITO_JWKS_URL="http://127.0.0.1:9/jwks.json",
        GRPC_REFLECTION="off",
        SIMPLU_WORKERS="4",
        LOG_LEVEL="debug",
        CHANGE_RETENTION_SECONDS="3600",
    )
    assert settings.grpc_port == 6000
    assert settings.citrus_server_url == "https://citrus.example"
    assert settings.single_database is False
    assert settings.citrus_timeout_ms == 750
    assert settings.cognito_client_ids == ("a", "b", "c")
    assert settings.cognito_issuer == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf"
    assert settings.jwks_url == "http://127.0.0.1:9/jwks.json"
    assert settings.grpc_reflection is False
    assert settings.workers == 4
    assert settings.log_level == "DEBUG"
    assert settings.change_retention_seconds == 3600


def test_settings_are_frozen() -> None:
    """Settings cannot change after the start."""
    settings = read()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.grpc_port = 1  # type: ignore[misc]  # assigning to a frozen field is the point


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("GRPC_PORT", "http", "GRPC_PORT must be an integer"),
        ("GRPC_PORT", "70000", "GRPC_PORT must be between 0 and 65535"),
        ("GRPC_MAX_WORKERS", "0", "GRPC_MAX_WORKERS must be between"),
        ("GRPC_MAX_CONCURRENT_RPCS", "-5", "GRPC_MAX_CONCURRENT_RPCS must be between"),
        ("GRPC_REFLECTION", "maybe", "GRPC_REFLECTION must be true or false"),
        ("SIMPLU_WORKERS", "x", "SIMPLU_WORKERS must be an integer"),
        ("CITRUS_TIMEOUT", "1.5s", "CITRUS_TIMEOUT must be an integer"),
        ("CITRUS_RETRY_ATTEMPTS", "99", "CITRUS_RETRY_ATTEMPTS must be between 1 and 10"),
        ("DEFAULT_DEADLINE_SECONDS", "0", "DEFAULT_DEADLINE_SECONDS must be between"),
        ("METRICS_PORT", "-1", "METRICS_PORT must be between"),
        ("DATABASE_PORT", "five", "DATABASE_PORT must be an integer"),
        ("SHARD_POOL_MAX_SIZE", "0", "SHARD_POOL_MAX_SIZE must be between"),
        ("ROUTING_CACHE_TTL_SECONDS", "soon", "ROUTING_CACHE_TTL_SECONDS must be a number"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be"),
        ("DYNAMODB_ENDPOINT", "localhost:4566", "DYNAMODB_ENDPOINT must be an http:// or https:// URL"),
        ("COGNITO_JWKS_URL", "file:///etc/passwd", "COGNITO_JWKS_URL must be an http:// or https:// URL"),
        ("TENANT_USAGE_TOP_K", "5", "TENANT_USAGE_TOP_K must be between 10 and 100000"),
        ("TENANT_METRICS_TOP", "1000", "TENANT_METRICS_TOP must be between 0 and 100"),
        ("CHANGE_RETENTION_SECONDS", "10", "CHANGE_RETENTION_SECONDS must be between 60 and"),
        ("CHANGE_RETENTION_SECONDS", "a week", "CHANGE_RETENTION_SECONDS must be a number"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str, expected: str) -> None:
    """Each malformed variable stops the start with a message naming that variable."""
    with pytest.raises(SettingsError, match=expected):
        read(**{name: value})


def test_several_bad_variables_are_all_named_at_once() -> None:
    """Every problem is reported together, each naming its variable, in the order they are read."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {
                "COGNITO_CLIENT_ID": "client-a",
                "GRPC_PORT": "http",
                "SHARD_POOL_MAX_SIZE": "0",
                "DYNAMODB_ENDPOINT": "localhost:4566",
                "LOG_LEVEL": "LOUD",
            }
        )
    problems = caught.value.problems
    assert len(problems) == 5, problems
    for name in (
        "COGNITO_USER_POOL_ID",
        "GRPC_PORT",
        "SHARD_POOL_MAX_SIZE",
        "DYNAMODB_ENDPOINT",
        "LOG_LEVEL",
    ):
        assert sum(name in problem for problem in problems) == 1, name
        assert name in str(caught.value)


@pytest.mark.parametrize("missing", ["COGNITO_USER_POOL_ID", "COGNITO_CLIENT_ID"])
def test_a_missing_required_variable_is_named(missing: str) -> None:
    """Without the Cognito pool or client the start stops, naming the missing variable."""
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(SettingsError, match=f"{missing} is required"):
        Settings.from_env(env)


def test_blank_values_count_as_unset() -> None:
    """An empty or blank variable falls back to the default (and a blank required one is missing)."""
    assert read(GRPC_PORT="  ").grpc_port == 50051
    with pytest.raises(SettingsError, match="COGNITO_CLIENT_ID"):
        read(COGNITO_CLIENT_ID=" , ")


def test_citrus_url_needs_an_api_key() -> None:
    """CITRUS_SERVER_URL without CITRUS_API_KEY is refused, naming the key variable."""
    with pytest.raises(SettingsError, match="CITRUS_API_KEY is required"):
        read(CITRUS_SERVER_URL="http://citrus:8080")


def test_pool_min_may_not_exceed_max() -> None:
    """SHARD_POOL_MIN_SIZE above SHARD_POOL_MAX_SIZE is refused, naming both."""
    with pytest.raises(SettingsError, match="SHARD_POOL_MIN_SIZE must not exceed SHARD_POOL_MAX_SIZE"):
        read(SHARD_POOL_MIN_SIZE="20", SHARD_POOL_MAX_SIZE="5")


def test_errors_never_echo_a_secret() -> None:
    """A malformed URL that may hold credentials is not echoed back in the error."""
    with pytest.raises(SettingsError) as caught:
        read(CITRUS_SERVER_URL="citrus://user:s3cr3t-pw@host", CITRUS_API_KEY="key-s3cr3t")
    assert "s3cr3t" not in str(caught.value)
    assert "CITRUS_SERVER_URL" in str(caught.value)


def test_secrets_are_not_in_the_repr() -> None:
    """The API key and database password never appear when settings are printed or logged."""
    settings = read(
        CITRUS_SERVER_URL="http://citrus:8080",
        CITRUS_API_KEY="api-key-s3cr3t",
        DATABASE_PASSWORD="db-pw-s3cr3t",
    )
    assert settings.citrus_api_key == "api-key-s3cr3t"
    assert settings.database_password == "db-pw-s3cr3t"
    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in str(settings)
