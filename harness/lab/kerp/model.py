"""Request validation of the K-ERP app (pure): vouchers with balanced double-entry lines, tax invoices, logins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from harness.errors import HarnessError

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("9999999999999999.99")  # numeric(18, 2)
MAX_LINES = 100


class InvalidRequest(HarnessError):
    """A request body the K-ERP app rejects with 422; the message names the bad field."""


@dataclass(frozen=True)
class VoucherLine:
    account_id: int
    debit: Decimal
    credit: Decimal


@dataclass(frozen=True)
class VoucherIn:
    company_id: int
    request_id: str
    voucher_date: date
    description: str
    lines: tuple[VoucherLine, ...]


@dataclass(frozen=True)
class TaxInvoiceIn:
    company_id: int
    amount: Decimal
    voucher_id: int | None


@dataclass(frozen=True)
class LoginIn:
    email: str
    password: str


def _obj(body: Any) -> dict:
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def _int(body: dict, key: str, *, required: bool = True) -> int | None:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidRequest(f"{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        else:
            raise InvalidRequest(f"{key} must be an integer, got {value!r}")
    if not 0 < value < 2**63:
        raise InvalidRequest(f"{key} must be a positive integer, got {value}")
    return value


def _str(body: dict, key: str, *, required: bool = True, max_len: int = 200, default: str = "") -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidRequest(f"{key} is required")
        return default
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string")
    if required and not value.strip():
        raise InvalidRequest(f"{key} must not be empty")
    if len(value) > max_len:
        raise InvalidRequest(f"{key} is longer than {max_len} characters")
    return value


def money(value: Any, field: str) -> Decimal:
    """A non-negative amount with at most 2 decimals (number or numeric string)."""
    if value is None:
        return Decimal("0.00")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidRequest(f"{field} must be a number, got {value!r}")
    try:
        d = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation as e:
        raise InvalidRequest(f"{field} must be a number, got {value!r}") from e
    if not d.is_finite() or d < 0 or d > MAX_AMOUNT:
        raise InvalidRequest(f"{field} must be between 0 and {MAX_AMOUNT}, got {value!r}")
    q = d.quantize(CENT)
    if q != d:
        raise InvalidRequest(f"{field} has more than 2 decimals: {value!r}")
    return q


def parse_voucher(body: Any) -> VoucherIn:
    """Validate a voucher: >= 2 lines, each a debit or a credit, debits == credits > 0."""
    body = _obj(body)
    company_id = _int(body, "company_id")
    request_id = _str(body, "request_id", max_len=200)
    raw_date = body.get("voucher_date")
    if raw_date is None:
        voucher_date = date.today()
    else:
        try:
            voucher_date = date.fromisoformat(raw_date) if isinstance(raw_date, str) else None
        except ValueError:
            voucher_date = None
        if voucher_date is None:
            raise InvalidRequest(f"voucher_date must be an ISO date (YYYY-MM-DD), got {raw_date!r}")
    description = _str(body, "description", required=False, max_len=500)
    raw_lines = body.get("lines")
    if not isinstance(raw_lines, list) or len(raw_lines) < 2:
        raise InvalidRequest("lines must be a list of at least 2 lines")
    if len(raw_lines) > MAX_LINES:
        raise InvalidRequest(f"at most {MAX_LINES} lines per voucher")
    lines = []
    total_debit = total_credit = Decimal("0.00")
    for i, raw in enumerate(raw_lines):
        if not isinstance(raw, dict):
            raise InvalidRequest(f"lines[{i}] must be an object")
        account = _int(raw, "account_id")
        debit = money(raw.get("debit"), f"lines[{i}].debit")
        credit = money(raw.get("credit"), f"lines[{i}].credit")
        if (debit > 0) == (credit > 0):
            raise InvalidRequest(f"lines[{i}] must have either a debit or a credit")
        total_debit += debit
        total_credit += credit
        lines.append(VoucherLine(account, debit, credit))
    if total_debit != total_credit:
        raise InvalidRequest(f"voucher is unbalanced: debits {total_debit} != credits {total_credit}")
    return VoucherIn(company_id, request_id, voucher_date, description, tuple(lines))


def parse_tax_invoice(body: Any) -> TaxInvoiceIn:
    body = _obj(body)
    company_id = _int(body, "company_id")
    amount = money(body.get("amount"), "amount")
    if amount <= 0:
        raise InvalidRequest("amount must be positive")
    return TaxInvoiceIn(company_id, amount, _int(body, "voucher_id", required=False))


def parse_login(body: Any) -> LoginIn:
    body = _obj(body)
    return LoginIn(_str(body, "email", max_len=320).strip().lower(), _str(body, "password", max_len=1000))
