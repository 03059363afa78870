"""API tokens: generated once, stored as SHA-256 hashes, checked in constant time.

Roles: ``admin`` (everything), ``worker`` (the trial protocol and worker
registration), ``viewer`` (read-only). A token travels only in the
``Authorization: Bearer`` header (or the dashboard's HttpOnly cookie), never
in a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.db import utcnow
from service.core.errors import Forbidden, InvalidRequest, Unauthorized
from service.storage.models import TokenRecord

ROLES: tuple[str, ...] = ("admin", "worker", "viewer")
TOKEN_PREFIX = "hpo_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id (None when auth is off), name and role."""

    token_id: int | None
    name: str
    role: str


ANONYMOUS_ADMIN = Principal(token_id=None, name="auth-disabled", role="admin")


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def create_token_without_commit(session: Session, role: str, name: str) -> tuple[str, int]:
    """Mint a token; returns (raw token, id). The raw token is never stored."""
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}, got {role!r}", "role")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = TokenRecord(name=name, role=role, token_hash=hash_token(raw), created_at=utcnow())
    session.add(record)
    session.flush()
    return raw, record.id


def count_tokens(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(TokenRecord)) or 0


def authenticate(session: Session, raw: str | None) -> Principal:
    """Resolve a raw bearer token to its principal, or raise Unauthorized."""
    if not raw:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    digest = hash_token(raw)
    record = session.scalar(select(TokenRecord).where(TokenRecord.token_hash == digest))
    # Constant-time comparison of the digests, even after the indexed lookup.
    if record is None or not hmac.compare_digest(record.token_hash, digest):
        raise Unauthorized("invalid token")
    if record.revoked_at is not None:
        raise Unauthorized("token revoked")
    return Principal(token_id=record.id, name=record.name, role=record.role)


def require_role(principal: Principal, allowed: tuple[str, ...]) -> None:
    """Admin may do everything; others only what ``allowed`` lists."""
    if principal.role == "admin" or principal.role in allowed:
        return
    raise Forbidden(f"role {principal.role!r} may not do this (needs {' or '.join(allowed)})")


def list_tokens(session: Session) -> list[TokenRecord]:
    return list(session.scalars(select(TokenRecord).order_by(TokenRecord.id)))


def revoke_token_without_commit(session: Session, token_id: int) -> TokenRecord:
    record = session.get(TokenRecord, token_id)
    if record is None:
        from service.core.errors import NotFound

        raise NotFound(f"token {token_id} not found", "token_id")
    record.revoked_at = record.revoked_at or utcnow()
    return record
