"""The HTTP recommendation service: a FastAPI app over one finished run's :class:`Recommender`.

Every error answer is a JSON object ``{"error": <code>, "message": <what is wrong>, ...}``:
400 malformed JSON, 413 body too large, 415 not JSON, 422 a request that parses but cannot be
answered (bad field, unknown item ids or domain, empty history, top_k out of range), 404/405
unknown path or method, 500 an internal error (with its message; the server keeps running).
The client is trusted with nothing: every field is validated and bounded before it reaches the
model, and requests carry no user identity.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StrictStr,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedscope import __version__
from fedscope.serving.recommender import (
    Query,
    RecommendationError,
    Recommendations,
    Recommender,
)

MAX_TOP_K = 1000
MAX_BATCH = 256
MAX_HISTORY = 2000  # items per history; the model reads only its most recent max_len anyway
MAX_ITEM_ID_CHARS = 200
MAX_BODY_BYTES = 8 * 1024 * 1024
# Environment of `fedscope serve --workers N`: each worker process builds its own app.
RUN_DIR_ENV = "FEDSCOPE_SERVE_RUN_DIR"
THREADS_ENV = "FEDSCOPE_SERVE_THREADS"


def _item_id(value: Any) -> str | int:
    # One plain check instead of a str|int union: a union reports a confusing error per arm.
    if isinstance(value, str):
        if not 1 <= len(value) <= MAX_ITEM_ID_CHARS:
            raise PydanticCustomError(
                "item_id_length",
                "an item id has 1 to {limit} characters, got {length}",
                {"limit": MAX_ITEM_ID_CHARS, "length": len(value)},
            )
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PydanticCustomError(
        "item_id_type",
        "an item id is a string (item key) or an integer (global item id), got {kind}",
        {"kind": "null" if value is None else type(value).__name__},
    )


_log = logging.getLogger("uvicorn.error")  # uvicorn's configured logger: lands in the server log

ItemId = Annotated[
    str | int,
    PlainValidator(_item_id),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": MAX_ITEM_ID_CHARS},
                {"type": "integer", "minimum": 0},
            ]
        }
    ),
]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [{"history": ["B000123", "B000456"], "domain": None, "top_k": 10}]
        },
    )

    history: list[ItemId] = Field(
        min_length=1,
        max_length=MAX_HISTORY,
        description="The user's items, oldest first: item keys (e.g. ASINs) or global item ids.",
    )
    domain: Annotated[StrictStr, StringConstraints(max_length=200)] | None = Field(
        default=None, description="Target domain (GET /domains); null: every domain."
    )
    top_k: StrictInt = Field(default=10, ge=1, le=MAX_TOP_K, description="Items per domain.")


class BatchRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    requests: list[RecommendRequest] = Field(min_length=1, max_length=MAX_BATCH)


class RecommendedItemOut(BaseModel):
    item: str = Field(description="The item's key in the data set (e.g. an ASIN).")
    title: str | None = Field(description="The item's title; null when the data set has none.")
    score: float = Field(description="The model's score (higher is better).")
    rank: int = Field(description="1-based rank within its domain.")
    tied: bool = Field(
        description="Another unseen item of the domain has exactly this score: the order "
        "among such items is by item id (lower first), not the model's preference."
    )


class RecommendResponse(BaseModel):
    history_length: int
    recommendations: dict[str, list[RecommendedItemOut]] = Field(
        description="Target domain name -> its top-K items, best first."
    )


class BatchResponse(BaseModel):
    results: list[RecommendResponse] = Field(description="One answer per request, in order.")


class DomainOut(BaseModel):
    name: str
    n_items: int
    items_with_title: int


class DomainsResponse(BaseModel):
    domains: list[DomainOut]


class HealthResponse(BaseModel):
    status: str
    model_loaded: bool
    run_id: str
    dataset: str
    method: str
    regime: str
    selected_round: int
    domains: list[str]
    code_version: str | None
    server_version: str
    torch_threads: int


class ErrorResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    error: str = Field(description="A stable code, e.g. unknown_items, invalid_request.")
    message: str = Field(description="What is wrong, for a person.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not valid JSON."},
    413: {"model": ErrorResponse, "description": "The body is too large."},
    415: {"model": ErrorResponse, "description": "The body is not sent as application/json."},
    422: {
        "model": ErrorResponse,
        "description": "Invalid request: a field, unknown item ids or domain, top_k out of range.",
    },
    500: {"model": ErrorResponse, "description": "Internal error (the server keeps running)."},
}


def _error(status: int, code: str, message: str, **details: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **details}, status_code=status)


def _as_response(history_length: int, answer: Recommendations) -> dict[str, Any]:
    return {
        "history_length": history_length,
        "recommendations": {
            name: [item.as_dict() for item in items] for name, items in answer.items()
        },
    }


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


class BodySizeLimit:
    """Refuses request bodies over ``max_bytes`` with 413, before the app reads them.

    Content-Length is checked up front; a chunked body is counted as it arrives and
    buffered (it is small by then), so the app never sees an oversized one.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _error(400, "bad_request", "invalid Content-Length header")(
                    scope, receive, send
                )
                return
            if int(declared) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        await self.app(
            scope,
            _replay([{"type": "http.request", "body": bytes(body), "more_body": False}], receive),
            send,
        )

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _error(413, "body_too_large", f"request body is larger than {self.max_bytes} bytes")(
            scope, receive, send
        )


class InternalErrorAnswer:
    """An unexpected exception becomes a 500 JSON answer with its message, logged with its
    traceback; the connection stays open.

    Starlette's own handler for ``Exception`` answers too but then re-raises, and uvicorn
    closes the connection after logging it, so a keep-alive client sees a reset.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # half an answer is out: nothing sound left to send
                raise
            _log.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
            await _error(500, "internal_error", f"{type(exc).__name__}: {exc}")(
                scope, receive, send
            )


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


def create_app(
    run_dir: Path | str,
    *,
    threads: int | None = None,
    recommender: Recommender | None = None,
) -> FastAPI:
    """The service for one finished run (loaded now, once; refused if it cannot serve).

    ``threads``: torch threads for this process; ``recommender``: an already loaded one.
    """
    rec = recommender or Recommender.from_run_dir(Path(run_dir), threads=threads)
    meta = rec.metadata
    app = FastAPI(
        title="fedscope recommendations",
        version=__version__,
        description=(
            f"Top-K next items from run `{rec.run_id}` ({meta.get('method')}, "
            f"{meta.get('regime')}) on data set `{rec.dataset.name}`. Histories are item keys or "
            "global item ids, oldest first; items already in a history are never recommended."
        ),
    )
    app.state.recommender = rec
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(InternalErrorAnswer)  # added last: the outermost of ours

    @app.exception_handler(RecommendationError)
    async def _recommendation_error(request: Request, exc: RecommendationError) -> JSONResponse:
        extra = exc.details()
        if exc.request_index is not None:
            extra["request_index"] = exc.request_index
        return _error(422, exc.code, exc.message, **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        bad_json = [e for e in errors if e.get("type") == "json_invalid"]
        if bad_json:
            e = bad_json[0]
            reason = (e.get("ctx") or {}).get("error", "JSON decode error")
            position = e["loc"][-1] if len(e.get("loc", ())) > 1 else "?"
            return _error(
                400,
                "malformed_json",
                f"request body is not valid JSON: {reason} at character {position}",
            )
        if isinstance(exc.body, bytes | bytearray):
            return _error(
                415,
                "unsupported_media_type",
                "send the request body as JSON with 'Content-Type: application/json'",
            )
        problems = [
            {
                "location": _location(tuple(e.get("loc", ()))),
                "message": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in errors
        ]
        message = "; ".join(f"{p['location']}: {p['message']}" for p in problems[:10])
        if len(problems) > 10:
            message += f"; and {len(problems) - 10} more"
        return _error(422, "invalid_request", message, errors=problems[:100])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        message = str(exc.detail)
        if exc.status_code == 400 and request.method == "POST":
            # FastAPI's answer to a body json.loads cannot even decode (bad UTF-8, too deep)
            code = "malformed_json"
            message = f"request body is not valid JSON ({message.lower()})"
        response = _error(exc.status_code, code, message)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.get("/health", response_model=HealthResponse, summary="Is the model loaded?")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model_loaded": True,
            "run_id": rec.run_id,
            "dataset": rec.dataset.name,
            "method": meta["method"],
            "regime": meta["regime"],
            "selected_round": meta["selected_round"],
            "domains": list(rec.domain_names),
            "code_version": meta.get("code_version"),
            "server_version": __version__,
            "torch_threads": torch.get_num_threads(),
        }

    @app.get("/domains", response_model=DomainsResponse, summary="The data set's domains")
    def domains() -> dict[str, Any]:
        return {"domains": rec.domains()}

    @app.post(
        "/recommend",
        response_model=RecommendResponse,
        responses=ERROR_RESPONSES,
        summary="Top-K next items for one history",
    )
    def recommend(body: RecommendRequest) -> dict[str, Any]:
        # A sync endpoint: FastAPI runs it in its thread pool; the Recommender's lock
        # serialises the forward passes on the shared model.
        answer = rec.recommend(body.history, body.domain, body.top_k)
        return _as_response(len(body.history), answer)

    @app.post(
        "/recommend/batch",
        response_model=BatchResponse,
        responses=ERROR_RESPONSES,
        summary=f"Top-K for up to {MAX_BATCH} histories, scored together",
    )
    def recommend_batch(body: BatchRequest) -> dict[str, Any]:
        queries = [Query(r.history, r.domain, r.top_k) for r in body.requests]
        answers = rec.recommend_many(queries)
        return {
            "results": [
                _as_response(len(r.history), a) for r, a in zip(body.requests, answers, strict=True)
            ]
        }

    return app


def app_from_environment() -> FastAPI:
    """Factory for uvicorn worker processes (``fedscope serve --workers N``)."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        raise RuntimeError(f"{RUN_DIR_ENV} is not set: start the service with `fedscope serve`")
    threads = os.environ.get(THREADS_ENV)
    return create_app(Path(run_dir), threads=int(threads) if threads else None)
