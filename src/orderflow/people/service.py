"""Users, personal API tokens and console sessions: the use cases (they never commit)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from orderflow.clock import now
from orderflow.errors import Conflict, Invalid, NotFound
from orderflow.people import passwords
from orderflow.people.models import ApiToken, ConsoleSession, User
from orderflow.people.roles import Principal, Role, user_actor

NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
TOKEN_PREFIX = "oft_"
TOKEN_SHAPE = re.compile(r"^oft_[A-Za-z0-9_-]{43}$")
SESSION_KEY_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")
TOKEN_TOUCH_SECONDS = 300  # last_used_at is written at most this often per token
SESSION_TOUCH_SECONDS = 60  # a session's last_seen_at likewise
MAX_TOKEN_DAYS = 366


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def principal_of(user: User) -> Principal:
    return Principal(actor=user_actor(user.name), role=Role(user.role), user_id=user.id)


# --- users ------------------------------------------------------------------------------------


def users_exist(session: Session) -> bool:
    return session.scalar(select(func.count()).select_from(User)) != 0


def _user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user {name}")
    return user


def add_user(session: Session, name: str, role: str, password: str, *, actor: str) -> User:
    if not NAME.match(name):
        raise Invalid(
            "a user name is 1 to 64 characters: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter",
            field="name",
        )
    if role not in {r.value for r in Role}:
        raise Invalid(f"the role is admin, support or viewer, not {role}", field="role")
    check_password(password)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise Conflict(f"there is already a user {name}", code="user_exists")
    user = User(
        name=name, role=role, password_hash=passwords.hash_password(password), created_by=actor
    )
    session.add(user)
    session.flush()
    return user


def check_password(password: str) -> None:
    if len(password) < passwords.MIN_LENGTH:
        raise Invalid(
            f"a password has at least {passwords.MIN_LENGTH} characters", field="password"
        )


def set_password(session: Session, name: str, password: str) -> None:
    check_password(password)
    _user(session, name).password_hash = passwords.hash_password(password)


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def disable_user(session: Session, name: str) -> User:
    """The user can no longer log in; their sessions end and their tokens stop, at once."""
    user = _user(session, name)
    if user.disabled_at is None:
        user.disabled_at = now()
    session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
    return user


def enable_user(session: Session, name: str) -> User:
    user = _user(session, name)
    user.disabled_at = None
    return user


def authenticate(session: Session, name: str, password: str) -> Principal | None:
    """The enabled user with this name and password, else None (same time either way)."""
    user = session.scalar(select(User).where(User.name == name)) if NAME.match(name) else None
    if not passwords.verify_password(user.password_hash if user else None, password):
        return None
    assert user is not None
    if user.disabled_at is not None:
        return None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    return principal_of(user)


# --- personal API tokens ------------------------------------------------------------------------


DURATION = re.compile(r"^(\d+)([mhdw])$")
UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """'90m', '12h', '30d', '2w' → a timedelta (at most a year and a day)."""
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise Invalid(f"a duration is like 12h, 30d or 2w, not {text!r}", field="expires")
    span = timedelta(seconds=int(match.group(1)) * UNIT_SECONDS[match.group(2)])
    if span > timedelta(days=MAX_TOKEN_DAYS):
        raise Invalid(f"a token lives at most {MAX_TOKEN_DAYS} days", field="expires")
    return span


@dataclass(frozen=True)
class NewToken:
    id: int
    token: str  # shown once, never stored
    expires_at: datetime


def create_token(
    session: Session, name: str, expires_in: timedelta, note: str | None = None
) -> NewToken:
    user = _user(session, name)
    if user.disabled_at is not None:
        raise Conflict(f"user {name} is disabled", code="user_disabled")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        token_hash=_sha256(token),
        hint=token[:10],
        note=note,
        expires_at=now() + expires_in,
    )
    session.add(row)
    session.flush()
    return NewToken(row.id, token, row.expires_at)


def list_tokens(session: Session, name: str | None = None) -> list[dict[str, Any]]:
    query = select(ApiToken, User.name).join(User, User.id == ApiToken.user_id)
    if name is not None:
        query = query.where(User.name == name)
    moment = now()
    rows = []
    for token, user_name in session.execute(query.order_by(ApiToken.id)):
        state = (
            "revoked" if token.revoked_at else "expired" if token.expires_at <= moment else "active"
        )
        rows.append(
            {
                "id": token.id,
                "user": user_name,
                "hint": token.hint + "…",
                "note": token.note,
                "state": state,
                "created_at": token.created_at.isoformat(),
                "expires_at": token.expires_at.isoformat(),
                "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
            }
        )
    return rows


def revoke_token(session: Session, token_id: int) -> None:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = now()


@dataclass(frozen=True)
class TokenMatch:
    who: Principal
    token_id: int
    stale: bool  # its last_used_at is due to be written again (see `touch_token`)


def token_principal(session: Session, token: str) -> TokenMatch | None:
    """The enabled user whose unexpired, unrevoked token this is, else None (reads only)."""
    if not TOKEN_SHAPE.match(token):
        return None
    moment = now()
    found = session.execute(
        select(ApiToken.id, ApiToken.last_used_at, User)
        .join(User, User.id == ApiToken.user_id)
        .where(
            ApiToken.token_hash == _sha256(token),
            ApiToken.revoked_at.is_(None),
            ApiToken.expires_at > moment,
            User.disabled_at.is_(None),
        )
    ).first()
    if found is None:
        return None
    token_id, last_used, user = found
    stale = last_used is None or moment - last_used > timedelta(seconds=TOKEN_TOUCH_SECONDS)
    return TokenMatch(principal_of(user), token_id, stale)


def touch_token(session: Session, token_id: int) -> None:
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now()))


# --- console sessions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionKey:
    key: str  # the cookie's value, never stored
    csrf_token: str


@dataclass(frozen=True)
class LoggedIn:
    who: Principal
    name: str
    csrf_token: str
    session_id: int
    stale: bool  # its last_seen_at is due to be written again (see `touch_session`)


def start_session(session: Session, who: Principal) -> SessionKey:
    assert who.user_id is not None
    key, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session.add(ConsoleSession(key_hash=_sha256(key), user_id=who.user_id, csrf_token=csrf))
    return SessionKey(key, csrf)


def session_user(
    session: Session, key: str, *, idle_seconds: float, max_seconds: float
) -> LoggedIn | None:
    """The live session with this cookie value: its user enabled, neither idle nor too old
    (reads only)."""
    if not SESSION_KEY_SHAPE.match(key):
        return None
    moment = now()
    found = session.execute(
        select(ConsoleSession, User)
        .join(User, User.id == ConsoleSession.user_id)
        .where(ConsoleSession.key_hash == _sha256(key), User.disabled_at.is_(None))
    ).first()
    if found is None:
        return None
    row, user = found
    if moment - row.last_seen_at > timedelta(
        seconds=idle_seconds
    ) or moment - row.created_at > timedelta(seconds=max_seconds):
        return None
    touch_after = min(SESSION_TOUCH_SECONDS, idle_seconds / 4)
    stale = moment - row.last_seen_at > timedelta(seconds=touch_after)
    return LoggedIn(principal_of(user), user.name, row.csrf_token, row.id, stale)


def touch_session(session: Session, session_id: int) -> None:
    session.execute(
        update(ConsoleSession).where(ConsoleSession.id == session_id).values(last_seen_at=now())
    )


def end_session(session: Session, key: str) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.key_hash == _sha256(key)))


def forget_stale_sessions(session: Session, *, idle_seconds: float, max_seconds: float) -> int:
    moment = now()
    result = session.execute(
        delete(ConsoleSession).where(
            (ConsoleSession.last_seen_at < moment - timedelta(seconds=idle_seconds))
            | (ConsoleSession.created_at < moment - timedelta(seconds=max_seconds))
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
