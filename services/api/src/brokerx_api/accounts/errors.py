"""Errors of the accounts domain (rendered as problem+json by `brokerx_api.errors`)."""

from __future__ import annotations

from brokerx_api.errors import DomainError


class InvalidAmount(DomainError):
    status, code, title = 422, "invalid_amount", "Invalid amount"


class UnsupportedCurrency(DomainError):
    status, code, title = 422, "unsupported_currency", "Unsupported currency"


class IdempotencyKeyReused(DomainError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency key reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used with a different request body;"
            " use a new key for a new request"
        )


class IdempotencyInProgress(DomainError):
    status, code, title = 409, "idempotency_in_progress", "Request already in progress"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed; retry shortly",
            headers={"Retry-After": "1"},
        )


class AccountNotFound(DomainError):
    status, code, title = 404, "account_not_found", "Account not found"
