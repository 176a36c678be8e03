"""Errors that are stored or built in several places come from one class or one helper."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError

from hushscribe.errors import (
    ConfigError,
    JobCancelled,
    describe_validation_errors,
    status_for_code,
    type_for_status,
)
from hushscribe.settings import load_settings


def test_job_cancelled_is_an_error_class() -> None:
    assert status_for_code("job_cancelled") == 409
    error = JobCancelled("job x was cancelled")
    assert error.body() == {
        "error": {
            "message": "job x was cancelled",
            "type": "invalid_request_error",
            "code": "job_cancelled",
        }
    }
    assert type_for_status(error.status) == error.type


class _Inner(BaseModel):
    size: int = Field(gt=0)


class _Outer(BaseModel):
    inner: _Inner
    name: str


def test_validation_errors_are_described_in_one_line() -> None:
    with pytest.raises(ValidationError) as raised:
        _Outer.model_validate({"inner": {"size": 0}})
    assert describe_validation_errors(raised.value.errors()) == (
        "inner.size: Input should be greater than 0; name: Field required"
    )
    assert describe_validation_errors([{"loc": (), "msg": "bad"}]) == "(root): bad"


def test_settings_use_the_same_description() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, jobs={"queue_max": 0, "workers": -1})
    assert raised.value.message == (
        "invalid configuration: jobs.workers: Input should be greater than or equal to 0; "
        "jobs.queue_max: Input should be greater than or equal to 1"
    )
