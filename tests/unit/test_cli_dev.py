"""`simplu-grpc dev` where the dev stack cannot run (the production image) says so and exits."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from simplu_grpc import cli


def test_dev_without_the_dev_extras_says_the_stack_is_not_included(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With moto not importable (as in the image) `dev` exits 1 with a message naming what is
    missing and how to run the stack, instead of an ImportError traceback."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "moto" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert cli.main(["dev"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "not included in this installation" in err
    assert "moto" in err
    assert "make run" in err
