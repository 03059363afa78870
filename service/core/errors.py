"""Domain errors, raised by the domain and mapped to HTTP status codes in one place.

The API layer never builds error responses by hand: it raises (or lets the
domain raise) one of these, and :func:`service.api.errors.install_handlers`
turns it into ``{"detail": message, "field": ...}`` with the class's status.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class: a problem the caller can fix, with a message that says how."""

    status_code = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(DomainError):
    status_code = 404


class StudyNotFound(NotFound):
    pass


class TrialNotFound(NotFound):
    pass


class LeaseNotFound(NotFound):
    pass


class WorkerNotFound(NotFound):
    pass


class Conflict(DomainError):
    status_code = 409


class StudyExists(Conflict):
    pass


class TrialFinished(Conflict):
    pass


class LeaseExpired(Conflict):
    """The lease is no longer the trial's current one (expired, re-leased, finished)."""


class InvalidSpec(DomainError):
    status_code = 422


class InvalidRequest(DomainError):
    status_code = 422


class Unauthorized(DomainError):
    status_code = 401


class Forbidden(DomainError):
    status_code = 403


class DatabaseUnavailable(DomainError):
    status_code = 503


class ArtifactNotFound(NotFound):
    pass


class TooLarge(DomainError):
    """An upload over the configured size limit."""

    status_code = 413
