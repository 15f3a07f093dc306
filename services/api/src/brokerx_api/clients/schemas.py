"""Request and response bodies of sign-up, verification and the client's profile."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StrictBool

from brokerx_core.auth.passwords import MAX_PASSWORD_LENGTH

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().\-/]{3,38}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def normalise_email(value: Any) -> str:
    """Trimmed, syntactically valid, lower-cased e-mail (the unique key of a client).

    Private-network domains (`*.local`, as in compose and the benches, and `*.test`)
    are accepted: deliverability is the mail server's business, not the sign-up's.
    """
    if not isinstance(value, str):
        raise ValueError("must be a string")
    value = value.strip()
    local, _, domain = value.rpartition("@")
    # email-validator refuses special-use names outright; check `*.local` as `*.test`.
    private = domain.lower().endswith(".local")
    probe = f"{local}@{domain[: -len('.local')]}.test" if private else value
    try:
        result = validate_email(
            probe, check_deliverability=False, allow_smtputf8=False, test_environment=True
        )
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    normalised = (result.ascii_email or result.normalized).lower()
    return normalised[: -len(".test")] + ".local" if private else normalised


def _iso_date(value: Any) -> Any:
    # Only the documented YYYY-MM-DD form: no timestamps, no datetimes.
    if not isinstance(value, str) or not _DATE.match(value.strip()):
        raise ValueError("must be a date in YYYY-MM-DD form")
    return value.strip()


def _plausible_birth_date(value: date) -> date:
    if value.year < 1900:
        raise ValueError("must be after 1900-01-01")
    return value


def _line(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if _CONTROL.search(value):
            raise ValueError("must not contain control characters")
    return value


def _lines(value: Any) -> Any:
    # Postal addresses may span lines; nothing else below a space is allowed.
    if isinstance(value, str):
        value = value.strip()
        if _CONTROL.search(value.replace("\r\n", "\n").replace("\n", " ")):
            raise ValueError("must not contain control characters")
    return value


def _phone(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip() or None
        if value is not None and not _PHONE.match(value):
            raise ValueError("must be a phone number (digits, spaces, + ( ) . - /)")
    return value


def _code(value: Any) -> Any:
    # A client may send the code as a JSON number; leading zeros are then lost.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**6:
        return f"{value:06d}"
    return value.strip() if isinstance(value, str) else value


Email = Annotated[str, BeforeValidator(normalise_email), Field(max_length=320)]
Name = Annotated[str, BeforeValidator(_line), Field(min_length=1, max_length=100)]
Code = Annotated[str, BeforeValidator(_code), Field(max_length=32)]
BirthDate = Annotated[date, BeforeValidator(_iso_date), AfterValidator(_plausible_birth_date)]


class SignupIn(BaseModel):
    email: Email
    # Length and strength are the password policy's business (422 weak_password).
    password: str = Field(max_length=MAX_PASSWORD_LENGTH)
    first_name: Name
    last_name: Name
    date_of_birth: BirthDate
    address: Annotated[str, BeforeValidator(_lines), Field(min_length=1, max_length=500)]
    phone: Annotated[str | None, BeforeValidator(_phone)] = None


class ClientStatusOut(BaseModel):
    id: uuid.UUID
    email: str
    status: Literal["pending", "active", "suspended"]


class VerifyIn(BaseModel):
    email: Email
    code: Code


class ResendIn(BaseModel):
    email: Email


class ResendOut(BaseModel):
    detail: str = (
        "If this address belongs to an account awaiting verification, a new code is on its way."
    )


class MeOut(BaseModel):
    id: uuid.UUID
    email: str
    first_name: str
    last_name: str
    status: Literal["pending", "active", "suspended"]
    mfa: Literal["none", "totp", "email"]
    email_confirmations: bool
    created_at: datetime


class MeUpdate(BaseModel):
    email_confirmations: StrictBool | None = None
