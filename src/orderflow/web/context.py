"""What every request handler may use, built once per app and reached through dependencies."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from orderflow.backpressure import Gauge
from orderflow.config import Settings
from orderflow.db import Database
from orderflow.orders.group_commit import GroupCommit
from orderflow.people import service as people
from orderflow.people.roles import BOOTSTRAP, Principal, Role
from orderflow.shipping.webhook_commit import WebhookCommit


@dataclass(frozen=True)
class DemoSimulators:
    """The demo's simulated outside world, whose switches the console's demo page flips."""

    bobs_post_url: str
    paydesk_url: str


@dataclass
class AppContext:
    settings: Settings
    db: Database
    mailbox: Any = None  # the demo's MailSink, whose messages the console shows
    demo: DemoSimulators | None = None  # `orderflow demo`: where its simulators' switches are
    pressure: Gauge = field(init=False)
    placement: GroupCommit = field(init=False)
    webhooks: WebhookCommit = field(init=False)

    def __post_init__(self) -> None:
        self.pressure = Gauge(
            self.db,
            self.settings.backpressure_warning_seconds,
            self.settings.backpressure_shedding_seconds,
        )
        self.placement = GroupCommit(self.db, queue_limit=self.settings.placement_queue_limit)
        self.webhooks = WebhookCommit(self.db, poll_seconds=self.settings.tracking_poll_seconds)


class Unauthorized(Exception):
    pass


# The dependencies below do no I/O: `async def` keeps them off the thread pool (a thread hop
# per dependency per request is a measurable share of a placement's CPU).
async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Context = Annotated[AppContext, Depends(get_context)]


def token_matches(ctx: AppContext, token: str | None) -> bool:
    """Whether `token` is the configured bootstrap token (ORDERFLOW_ADMIN_TOKEN)."""
    expected = ctx.settings.admin_token
    return bool(
        expected
        and token
        and hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected.encode())
    )


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    return token.strip()


def personal_token_principal(ctx: AppContext, token: str) -> Principal:
    """The user of a personal token (a database look-up: revocation, expiry and a disabled
    user take effect at once); 401 for anything else."""
    with ctx.db.read() as session:
        found = people.token_principal(session, token)
    if found is None:
        raise Unauthorized()
    if found.stale:
        with ctx.db.transaction() as session:
            people.touch_token(session, found.token_id)
    return found.who


# Declares the bearer scheme in the OpenAPI document (Swagger's Authorize button); who is
# accepted is decided by admin_of, from the raw header, as before.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="`Authorization: Bearer <token>`: a personal token or ORDERFLOW_ADMIN_TOKEN",
)
BEARER_SECURITY: list[dict[str, list[str]]] = [
    {"bearerAuth": []}
]  # for routes that read the header themselves


async def authenticate(ctx: AppContext, authorization: str | None) -> Principal:
    """Who is calling: the bootstrap token (checked in memory), or a personal token (looked up
    off the event loop); 401 otherwise."""
    token = _bearer(authorization)
    if token_matches(ctx, token):
        return BOOTSTRAP
    if not people.TOKEN_SHAPE.match(token):
        raise Unauthorized()
    return await asyncio.to_thread(personal_token_principal, ctx, token)


def requires(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if their role is at least `role`; else 401 or 403."""

    async def dependency(
        ctx: Context,
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Principal:
        who = await authenticate(ctx, request.headers.get("authorization"))
        who.require(role)
        return who

    return dependency


# Route classes: reading (viewer), investigating and fixing non-payment work (support),
# everything else (admin). A route that decides more itself (payment work, four-eyes) takes
# the caller and asks `who.can(...)`.
Viewer = Annotated[Principal, Depends(requires(Role.VIEWER))]
Support = Annotated[Principal, Depends(requires(Role.SUPPORT))]
Admin = Annotated[Principal, Depends(requires(Role.ADMIN))]


def read_session(ctx: Context) -> Iterator[Session]:
    with ctx.db.read() as session:
        yield session


ReadSession = Annotated[Session, Depends(read_session)]
