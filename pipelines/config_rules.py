"""Value rules for the pydantic config models (training, augmentation): one message shape,
"must be <requirement>, got <value>", which the training config names the key in front of."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import AfterValidator


def rule(check: Callable[[Any], Any], requirement: str) -> AfterValidator:
    """A key's rule: values failing ``check`` get "must be <requirement>, got <value>"."""
    def validate(value: Any) -> Any:
        if not check(value):
            raise ValueError(f"must be {requirement}, got {value!r}")
        return value
    return AfterValidator(validate)
