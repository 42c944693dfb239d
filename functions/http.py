"""A small, typed HTTP layer over the Flask request that functions-framework hands us.

Each route declares its path, its pydantic body, query and response models; the same table
drives dispatch and the OpenAPI document, so the two cannot drift apart. This is the edge:
the only place where the exception tree becomes status codes, always in one JSON shape.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import flask
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import Map, Rule

from shared import logs
from shared.auth import Identity, IdentityVerifier
from shared.deadlines import UNAVAILABLE_ERRORS
from shared.errors import (
    BadRequest,
    FrameforkError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from shared.settings import ApiSettings, get_settings

log = logging.getLogger(__name__)
ID_SHAPES = {
    "checkpoint_id": re.compile(r"^r[0-9]{1,9}-(storyboard|keyframes|clips|stitch)$"),
}
ID_SHAPE = re.compile(r"^[A-Za-z0-9_-]{20}$")
"""The ids this API issues (new_id(); checkpoints: one per run and stage): a path id of any
other shape names nothing, and is answered 404 before any read."""
MAX_JSON_DEPTH = 32
MAX_INTEGER_DIGITS = 20


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits; at most {MAX_INTEGER_DIGITS}")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    """The nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _leave_unread(request: flask.Request) -> None:
    """After a body refused for its size, the rest of it stays unread.

    functions-framework reads the whole body after every answer (its after_request hook
    read_request). Through a request with a size limit that read meets the limit again and
    raises, which turns the 413 into its 500 page; without the limit it would hold the whole
    refused body in memory. So the request's stream is emptied here and that read finds
    nothing; what the client still sends is the server's to discard (gunicorn reads an unread
    body off the connection before it reads the next request)."""
    request.max_content_length = None
    request.stream = io.BytesIO()  # werkzeug's cached_property takes an assignment


@dataclass
class Call:
    """What a handler gets: who is calling, the parsed inputs and the raw request."""

    identity: Identity
    path: dict[str, Any]
    body: Any
    query: Any
    request: flask.Request


@dataclass
class Reply:
    """A handler's answer when it is not simply a model with the route's status."""

    status: int
    body: BaseModel | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Call], BaseModel | Reply | None]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    """werkzeug rule syntax: /manifests/<manifest_id>"""
    handler: Handler
    summary: str
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    tag: str = "default"
    authenticated: bool = True
    raw_body: str | None = None
    """Content type of a body the handler reads itself (multipart uploads)."""
    errors: tuple[int, ...] = ()
    body_required: bool = True


def validation_details(error: ValidationError, where: str) -> list[dict[str, Any]]:
    return [
        {"loc": [where, *[str(p) for p in item["loc"]]], "msg": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False, include_context=False, include_input=False)
    ]


def _describe(error: ValidationError, where: str) -> str:
    first = error.errors(include_url=False)[0]
    location = ".".join(str(p) for p in first["loc"]) or where
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where} is not valid: {location}: {first['msg']}{more}"


class JsonApi:
    def __init__(
        self,
        routes: list[Route],
        settings: ApiSettings,
        verifier: Callable[[], IdentityVerifier],
    ) -> None:
        self.routes = routes
        self._settings = settings
        self._verifier = verifier
        self._map = Map(
            [Rule(r.path, methods=[r.method], endpoint=i) for i, r in enumerate(routes)],
            strict_slashes=False,
        )

    def __call__(self, request: flask.Request) -> flask.Response:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin:
            response = flask.Response(status=204)
        else:
            try:
                response = self._dispatch(request)
            except FrameforkError as error:
                response = self._error(error)
                if isinstance(error, PayloadTooLarge):
                    _leave_unread(request)
            except UNAVAILABLE_ERRORS as error:
                # A Google service did not answer within its deadline (shared/deadlines.py).
                log.warning("a dependency is unavailable: %r", error)
                response = self._error(
                    ServiceUnavailable(
                        "a service this API depends on did not answer in time; try again shortly"
                    )
                )
            except RequestEntityTooLarge:
                # werkzeug's own limit, met by a read that no route guarded.
                refused = PayloadTooLarge("the body is larger than this endpoint takes")
                response = self._json(refused.status, refused.to_body())
                _leave_unread(request)
            except Exception:
                log.exception("unhandled error in %s %s", request.method, request.path)
                response = self._json(
                    500,
                    {
                        "error": {
                            "code": "internal",
                            "message": "the server failed to answer this request; it was logged",
                            "status": 500,
                            "details": [],
                        }
                    },
                )
        self._add_cors(response, origin)
        return response

    def _error(self, error: FrameforkError) -> flask.Response:
        response = self._json(error.status, error.to_body())
        response.headers.update(error.headers)
        if isinstance(error, ServiceUnavailable) and "Retry-After" not in response.headers:
            response.headers["Retry-After"] = str(get_settings().dependencies.retry_after_s)
        return response

    def _dispatch(self, request: flask.Request) -> flask.Response:
        adapter = self._map.bind("api", path_info=request.path)
        try:
            index, path = adapter.match(method=request.method)
        except WerkzeugNotFound as error:
            raise NotFound(f"there is no {request.path} in this API") from error
        except WerkzeugMethodNotAllowed as error:
            allowed = ", ".join(sorted(error.valid_methods or []))
            raise MethodNotAllowed(
                f"{request.method} is not allowed here; use {allowed}", headers={"Allow": allowed}
            ) from error
        route = self.routes[index]
        if any(
            k.endswith("_id") and not ID_SHAPES.get(k, ID_SHAPE).match(str(v))
            for k, v in path.items()
        ):
            raise NotFound(f"there is no {request.path} in this API")  # before any read
        identity = (
            self._verifier().verify(request.headers.get("Authorization"))
            if route.authenticated
            else Identity(uid="")
        )
        call = Call(
            identity=identity,
            path=dict(path),
            body=self._body(route, request),
            query=self._query(route, request),
            request=request,
        )
        with logs.log_context(owner_id=identity.uid or None):
            result = route.handler(call)
        if isinstance(result, Reply):
            response = self._json(result.status, result.body)
            response.headers.update(result.headers)
            return response
        return self._json(route.status, result)

    def _query(self, route: Route, request: flask.Request) -> Any:
        if route.query is None:
            if request.args:
                raise ValidationFailed(
                    f"this endpoint takes no query parameters; got {', '.join(request.args)}"
                )
            return None
        repeated = [k for k in request.args if len(request.args.getlist(k)) > 1]
        if repeated:
            raise ValidationFailed(f"query parameters given more than once: {', '.join(repeated)}")
        try:
            return route.query.model_validate(dict(request.args))
        except ValidationError as error:
            raise ValidationFailed(
                _describe(error, "the query"), details=validation_details(error, "query")
            ) from error

    def _body(self, route: Route, request: flask.Request) -> Any:
        if route.raw_body is not None:
            return None
        length = request.content_length
        if route.body is None:
            if length:
                raise ValidationFailed("this endpoint takes no request body")
            return None
        if not route.body_required and not length and not request.headers.get("Transfer-Encoding"):
            return None
        limit = self._settings.max_body_bytes
        if length is not None and length > limit:
            raise PayloadTooLarge(f"the body is {length} bytes; the limit is {limit}")
        if request.mimetype != "application/json":
            raise UnsupportedMediaType(
                f"send the body as application/json, not {request.mimetype or 'no content type'}"
            )
        # Also bounds a body sent without a length (chunked): its read stops one byte past
        # the limit, where werkzeug's stream ends quietly rather than raising.
        request.max_content_length = limit + 1
        try:
            raw = request.get_data(cache=True)
        except RequestEntityTooLarge as error:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes") from error
        if len(raw) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        try:
            # The standard parser recurses per nesting level and converts integers of any
            # length: both bounded here, before pydantic sees the body.
            data = json.loads(raw, parse_int=_bounded_int, parse_constant=_no_constant)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BadRequest(f"the body is not valid JSON: {error}") from error
        except (ValueError, RecursionError) as error:
            raise BadRequest(
                f"the body is not JSON this API takes: {error or 'too deep'}"
            ) from error
        if _depth(data) > MAX_JSON_DEPTH:
            raise BadRequest(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
        if not isinstance(data, dict):
            raise ValidationFailed("the body must be a JSON object")
        try:
            return route.body.model_validate_json(raw)
        except ValidationError as error:
            unreadable = [e for e in error.errors() if e["type"] == "json_invalid"]
            if unreadable:
                # What the standard parser lets through and pydantic's does not: lone
                # surrogates (an unpaired \ud800 escape), which no UTF-8 text can hold.
                raise BadRequest(f"the body is not valid JSON: {unreadable[0]['msg']}") from error
            raise ValidationFailed(
                _describe(error, "the body"), details=validation_details(error, "body")
            ) from error

    def _json(self, status: int, body: BaseModel | dict[str, Any] | None) -> flask.Response:
        if body is None:
            return flask.Response(status=status)
        text = body.model_dump_json() if isinstance(body, BaseModel) else json.dumps(body)
        return flask.Response(text, status=status, mimetype="application/json")

    def _add_cors(self, response: flask.Response, origin: str | None) -> None:
        allowed = self._settings.cors_origins
        if not origin or not ("*" in allowed or origin in allowed):
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response.headers["Access-Control-Max-Age"] = "3600"
