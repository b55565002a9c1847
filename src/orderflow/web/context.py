"""What every request handler may use, built once per app and reached through dependencies."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from orderflow.backpressure import Gauge
from orderflow.config import Settings
from orderflow.db import Database
from orderflow.orders.group_commit import GroupCommit


@dataclass
class AppContext:
    settings: Settings
    db: Database
    mailbox: Any = None  # the demo's MailSink, whose messages the console shows
    pressure: Gauge = field(init=False)
    placement: GroupCommit = field(init=False)

    def __post_init__(self) -> None:
        self.pressure = Gauge(
            self.db,
            self.settings.backpressure_warning_seconds,
            self.settings.backpressure_shedding_seconds,
        )
        self.placement = GroupCommit(self.db, queue_limit=self.settings.placement_queue_limit)


class Unauthorized(Exception):
    pass


# The dependencies below do no I/O: `async def` keeps them off the thread pool (a thread hop
# per dependency per request is a measurable share of a placement's CPU).
async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Context = Annotated[AppContext, Depends(get_context)]


def token_matches(ctx: AppContext, token: str | None) -> bool:
    expected = ctx.settings.admin_token
    return bool(expected and token and hmac.compare_digest(token.encode(), expected.encode()))


def admin_of(ctx: AppContext, authorization: str | None) -> str:
    """The acting admin's name for the history; 401 without the right bearer token."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token_matches(ctx, token.strip()):
        raise Unauthorized()
    return "admin:api"


# Declares the bearer scheme in the OpenAPI document (Swagger's Authorize button); who is
# accepted is decided by admin_of, from the raw header, as before.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="`Authorization: Bearer <token>` (ORDERFLOW_ADMIN_TOKEN)",
)
BEARER_SECURITY: list[dict[str, list[str]]] = [
    {"bearerAuth": []}
]  # for routes that read the header themselves


async def require_admin(
    ctx: Context,
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> str:
    return admin_of(ctx, request.headers.get("authorization"))


Admin = Annotated[str, Depends(require_admin)]


def read_session(ctx: Context) -> Iterator[Session]:
    with ctx.db.read() as session:
        yield session


ReadSession = Annotated[Session, Depends(read_session)]
