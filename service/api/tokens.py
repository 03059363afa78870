"""Token management (admin only). The raw token is shown once, at creation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import AdminDep, SessionDep
from service.api.errors import error_responses
from service.core.auth import create_token_without_commit, list_tokens, revoke_token_without_commit

router = APIRouter(prefix="/tokens", tags=["tokens"], responses=error_responses(401, 403))


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["admin", "worker", "viewer"]
    name: str = Field(default="", max_length=255)


class TokenCreated(BaseModel):
    id: int
    role: str
    name: str
    token: str = Field(description="shown only once; store it now")


class TokenInfo(BaseModel):
    id: int
    role: str
    name: str
    created_at: datetime
    revoked: bool


@router.post("", status_code=201, response_model=TokenCreated)
def create_token(body: TokenCreate, session: SessionDep, _: AdminDep) -> TokenCreated:
    raw, token_id = create_token_without_commit(session, body.role, body.name or body.role)
    return TokenCreated(id=token_id, role=body.role, name=body.name or body.role, token=raw)


@router.get("", response_model=list[TokenInfo])
def get_tokens(session: SessionDep, _: AdminDep) -> list[TokenInfo]:
    return [
        TokenInfo(
            id=t.id, role=t.role, name=t.name, created_at=t.created_at, revoked=bool(t.revoked_at)
        )
        for t in list_tokens(session)
    ]


@router.delete("/{token_id}", status_code=204, responses=error_responses(404))
def revoke_token(
    token_id: Annotated[int, Path(ge=-(2**63), le=2**63 - 1, description="the token's id")],
    session: SessionDep,
    _: AdminDep,
) -> None:
    revoke_token_without_commit(session, token_id)
