"""Test-suite wiring: fixtures live in tests/fixtures/, one module per real component."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.citrus",
    "tests.fixtures.moto",
    "tests.fixtures.tokens",
    "tests.fixtures.server",
    "tests.fixtures.faultproxy",
    "tests.fixtures.clock",
    "tests.integration.lifecycle_stack",
]
