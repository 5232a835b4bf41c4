"""Unit tests of the ledger writers' outcome classification (ok / fail / indeterminate) and error mapping."""

from __future__ import annotations

import httpx
import pytest

from harness.workload.ledger import (
    ERR_CONNECT,
    ERR_TIMEOUT,
    ERR_TRANSPORT,
    LedgerWriters,
    NullRecorder,
    WorkloadError,
    _like_escape,
    classify,
    error_kind,
)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_ok(status):
    assert classify(status) == "ok"


def test_2xx_stays_ok_even_with_not_applied_header():
    # an acknowledgement is an acknowledgement: the header only explains failures
    assert classify(201, outcome="not-applied") == "ok"


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422, 429])
def test_4xx_is_fail(status):
    assert classify(status) == "fail"


@pytest.mark.parametrize("status", [408, 499])
def test_cut_exchanges_are_indeterminate(status):
    # request timeout / client closed: the server may have applied the write after all
    assert classify(status) == "indeterminate"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_other_5xx_is_indeterminate(status):
    assert classify(status) == "indeterminate"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("header", ["not-applied", "Not-Applied", " not-applied "])
def test_not_applied_header_makes_a_5xx_fail(status, header):
    assert classify(status, outcome=header) == "fail"


def test_other_outcome_header_values_do_not_count():
    assert classify(503, outcome="maybe-applied") == "indeterminate"
    assert classify(503, outcome="") == "indeterminate"


@pytest.mark.parametrize("status", [101, 301, 302, 304])
def test_unexpected_non_2xx_non_4xx_is_indeterminate(status):
    assert classify(status) == "indeterminate"


def test_no_response_nothing_sent_is_fail():
    assert classify(None, error=ERR_CONNECT) == "fail"


@pytest.mark.parametrize("error", [ERR_TIMEOUT, ERR_TRANSPORT, None])
def test_no_response_after_sending_is_indeterminate(error):
    assert classify(None, error=error) == "indeterminate"


REQ = httpx.Request("POST", "http://127.0.0.1:1/vouchers")


@pytest.mark.parametrize(
    "exc, kind",
    [
        (httpx.ConnectError("[Errno 111] Connection refused", request=REQ), ERR_CONNECT),
        (httpx.ConnectTimeout("connect timed out", request=REQ), ERR_CONNECT),
        (httpx.PoolTimeout("no connection available", request=REQ), ERR_CONNECT),
        (ConnectionRefusedError(111, "Connection refused"), ERR_CONNECT),
        (httpx.ReadTimeout("read timed out", request=REQ), ERR_TIMEOUT),
        (httpx.WriteTimeout("write timed out", request=REQ), ERR_TIMEOUT),
        (TimeoutError(), ERR_TIMEOUT),
        (httpx.ReadError("connection reset by peer", request=REQ), ERR_TRANSPORT),
        (httpx.WriteError("broken pipe", request=REQ), ERR_TRANSPORT),
        (httpx.RemoteProtocolError("Server disconnected without sending a response.", request=REQ), ERR_TRANSPORT),
        (ConnectionResetError(104, "Connection reset by peer"), ERR_TRANSPORT),
        (RuntimeError("anything else"), ERR_TRANSPORT),
    ],
)
def test_error_kind(exc, kind):
    assert error_kind(exc) == kind


@pytest.mark.parametrize(
    "exc, outcome",
    [
        (httpx.ConnectError("refused", request=REQ), "fail"),
        (httpx.ReadTimeout("timed out", request=REQ), "indeterminate"),
        (httpx.RemoteProtocolError("disconnected", request=REQ), "indeterminate"),
    ],
)
def test_exceptions_end_to_end(exc, outcome):
    assert classify(None, error=error_kind(exc)) == outcome


def test_voucher_body_is_balanced_and_keyed():
    import json

    w = LedgerWriters("http://127.0.0.1:1/", NullRecorder(), run_id="r-1_x", company_id=2, account_ids=(26, 40))
    body = json.loads(w.body('r-1_x-w3-17"'))
    assert body["request_id"] == 'r-1_x-w3-17"' and body["company_id"] == 2
    debit = sum(float(line["debit"]) for line in body["lines"])
    credit = sum(float(line["credit"]) for line in body["lines"])
    assert len(body["lines"]) == 2 and debit == credit > 0
    assert w.base_url == "http://127.0.0.1:1"


@pytest.mark.parametrize("kw", [{"writers": 0}, {"rate_per_s": 0}, {"account_ids": (5, 5)}, {"run_id": "a b"}])
def test_writer_arguments_are_validated(kw):
    args = {"run_id": "r", "company_id": 1, "account_ids": (2, 3), **kw}
    with pytest.raises(WorkloadError):
        LedgerWriters("http://127.0.0.1:1", NullRecorder(), **args)


def test_like_escape():
    assert _like_escape("a_b%c\\d") == "a\\_b\\%c\\\\d"
