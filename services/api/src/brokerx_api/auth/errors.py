"""Errors of sign-up, verification and authentication, with their HTTP status and code."""

from __future__ import annotations

from brokerx_api.errors import DomainError


class EmailTaken(DomainError):
    status, code, title = 409, "email_taken", "E-mail already registered"


class WeakPassword(DomainError):
    status, code, title = 422, "weak_password", "Password too weak"


class Underage(DomainError):
    status, code, title = 422, "underage", "Clients must be at least 18 years old"


class InvalidCode(DomainError):
    """A wrong, expired or spent code where the caller is already known (400)."""

    status, code, title = 400, "invalid_code", "Invalid or expired code"


class AlreadyActive(DomainError):
    status, code, title = 409, "already_active", "Account already verified"


class InvalidCredentials(DomainError):
    status, code, title = 401, "invalid_credentials", "Invalid e-mail or password"


class AccountNotActive(DomainError):
    status, code, title = 403, "account_not_active", "Account not active"


class AccountLocked(DomainError):
    status, code, title = 423, "account_locked", "Account temporarily locked"

    def __init__(self, retry_after: int) -> None:
        seconds = max(1, retry_after)
        super().__init__(
            f"Too many failed attempts; try again in {seconds} seconds",
            headers={"Retry-After": str(seconds)},
            extra={"retry_after": seconds},
        )


class InvalidMfaCode(DomainError):
    """A wrong second factor at login (401: the login is not authenticated)."""

    status, code, title = 401, "invalid_code", "Invalid or expired code"


class TokenRejected(DomainError):
    status, code, title = 401, "invalid_token", "Invalid or expired token"


class MfaUnavailable(DomainError):
    """The stored TOTP secret cannot be decrypted: a server fault (wrong keys), 503."""

    status, code, title = 503, "service_unavailable", "Service temporarily unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The second factor cannot be checked right now; try again later",
            headers={"Retry-After": "60"},
        )
