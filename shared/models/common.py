"""Small building blocks shared by the stored documents and the HTTP bodies."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
)

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A 20-character url-safe id, as Firestore's own auto ids."""
    return secrets.token_urlsafe(15)


def _no_control_chars(value: str) -> str:
    # Control characters would corrupt the derived sort keys (which use \x1f as a separator)
    # and have no place in a name a person typed.
    if _CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters")
    return value


# The patterns only tell API clients (and the OpenAPI document) what the validators enforce:
# no control characters, and at least one character that is not white space.
_PRINTABLE = (
    r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
)

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_no_control_chars),
    Field(json_schema_extra={"pattern": _PRINTABLE}),
]
Description = Annotated[str, StringConstraints(max_length=5000)]
Tag = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=50),
    AfterValidator(_no_control_chars),
    Field(json_schema_extra={"pattern": _PRINTABLE}),
]
TagList = Annotated[list[Tag], Field(max_length=50)]
DocumentId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _integral_float(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[StrictInt, BeforeValidator(_integral_float)]
"""An integer in a request body: true, "1" or 1.5 is none, and 1.0 is 1, as JSON Schema's
"integer" (what the OpenAPI document promises) says."""


class RequestBody(BaseModel):
    """Base of every JSON body a client sends: unknown fields are an error, not silently
    dropped. Booleans are StrictBool and integers WholeNumber wherever they appear: 0 is no
    boolean, and true or "1" is no integer."""

    model_config = ConfigDict(extra="forbid")


class QueryParams(BaseModel):
    """Base of query-string models: every value arrives as a string and is converted."""

    model_config = ConfigDict(extra="forbid")


class Document(BaseModel):
    """Base of every stored document: tolerant of fields added by later versions."""

    model_config = ConfigDict(extra="ignore", use_enum_values=False)
