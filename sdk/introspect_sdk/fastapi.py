"""FastAPI glue: `protect(app, guard)` installs the ASGI middleware (and starts and closes the
guard with the app's lifespan through `lifespan`), and `RequireScope` is the per-route
dependency that also hands the handler the introspection answer.

    app = FastAPI(lifespan=lifespan(guard))
    protect(app, guard, public={"/healthz"})

    @app.get("/items")
    async def items(answer: Annotated[Introspection, Depends(RequireScope("read"))]) -> ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request, Response

from introspect_sdk import answers
from introspect_sdk.answers import Introspection, Refusal
from introspect_sdk.asgi import IntrospectMiddleware, introspection
from introspect_sdk.guard import Guard


class Refused(Exception):
    """Raised by `RequireScope`; `protect`'s handler writes the refusal as it is."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.status)
        self.refusal = refusal


def _refused(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)  # registered for Refused only
    refusal = exc.refusal
    return Response(refusal.body, refusal.status, dict(refusal.headers))


def protect(app: FastAPI, guard: Guard, *, public: Collection[str] = ()) -> None:
    """Authenticate every request to `app` but `public` paths, and answer `Refused`."""
    app.add_middleware(IntrospectMiddleware, guard=guard, public=public)
    app.add_exception_handler(Refused, _refused)


def lifespan(guard: Guard) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A lifespan starting the guard with the app and closing it after."""

    @asynccontextmanager
    async def guarded(_app: FastAPI) -> AsyncIterator[None]:
        await guard.start()
        try:
            yield
        finally:
            await guard.close()

    return guarded


class RequireScope:
    """A dependency: the request's introspection answer, or 403 `insufficient_scope` unless
    it has every one of `scopes`."""

    def __init__(self, *scopes: str) -> None:
        self.scopes = scopes

    def __call__(self, request: Request) -> Introspection:
        """The answer, when it carries every scope."""
        answer = introspection(request.scope)
        refusal = answers.missing() if answer is None else answers.require(answer, self.scopes)
        if refusal is not None:
            raise Refused(refusal)
        assert answer is not None  # require() refuses a missing answer
        return answer
