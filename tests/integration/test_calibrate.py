"""`drill calibrate` on the real lab: K lost writes measured exactly, known delay within 20 %, plants named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.safety.fault_ledger import FaultLedger, ledger_path
from harness.failover.failback import lab_in_shape

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

PLANTED = {"unbalanced_voucher", "orphan_account", "voucher_line_without_voucher", "audit_sequence_gap",
           "invoice_number_gap"}


def _drill(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "NO_COLOR": "1"})


def test_calibrate_meters_against_known_faults(drill_lab, tmp_path: Path) -> None:
    p = _drill("calibrate", "--json", "--state-dir", str(drill_lab.state), "--report-dir", str(tmp_path / "calib"))
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}"
    result = json.loads(p.stdout)
    print(json.dumps({"loss": [{k: x[k] for k in ("k", "lost_measured", "rpo_measured_s", "rpo_expected_s",
                                                   "seconds")} for x in result["loss"]],
                      "delay": {k: result["delay"][k] for k in ("baseline_ms", "with_toxic_ms", "measured_ms",
                                                                "error_pct")},
                      "duration_s": result["duration_s"]}))
    assert result["passed"] is True
    assert {"passed", "loss", "delay", "integrity", "started_at", "duration_s"} <= set(result)

    assert [x["k"] for x in result["loss"]] == [0, 1, 37]
    for x in result["loss"]:
        assert x["lost_expected"] == x["lost_measured"] == x["k"], x
        assert abs(x["rpo_measured_s"] - x["rpo_expected_s"]) <= 0.001, x
        assert (x["rpo_measured_s"] == 0) == (x["k"] == 0), x
        assert x["ok"] and x["missing_anchors"] == [] and x["writes"]["unexpected"] == 0, x

    d = result["delay"]
    assert d["injected_ms"] == 200 and d["ok"], d
    assert d["error_pct"] <= 20.0 and abs(d["measured_ms"] - 200) <= 40, d
    assert d["popbill_requests_per_invoice"] == pytest.approx(1.0, abs=0.1), d

    assert {x["fault"] for x in result["integrity"]} == PLANTED
    for x in result["integrity"]:
        assert x["ok"] and set(x["planted_ids"]) <= set(x["reported"]), x

    assert (tmp_path / "calib" / "calibration.json").is_file()
    assert (tmp_path / "calib" / "timeline.jsonl").is_file()
    # afterwards: healthy, on primary, in its starting shape, nothing left in the fault ledger
    status = drill_lab.status()
    assert status["healthy"], status["health"]
    assert status["router"]["active_region"] == "primary"
    assert status["health"]["postgres_primary"]["role"] == "primary"
    assert status["health"]["postgres_dr"]["role"] == "standby"
    assert lab_in_shape(configuration={"drill_state_dir": str(drill_lab.state)})["ok"]
    assert FaultLedger(ledger_path(drill_lab.state)).active() == []


@pytest.mark.parametrize("args, message", [
    (("--k", "-1"), "--k -1 must be an integer in 0..10000"),
    (("--k", "many"), "--k 'many' is not an integer"),
    (("--delay-ms", "0"), "--delay-ms 0 must be an integer in 1..1500"),
])
def test_calibrate_bad_input_is_one_line_exit_2(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    p = _drill("calibrate", *args, "--state-dir", str(tmp_path / "no-lab"), timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [f"drill: error: {message}"]
    assert not (tmp_path / "no-lab").exists()  # refused before bringing any lab up
