"""The malformed-input corpus: every bad input is one line, a documented exit code, never a traceback, no lab.

One row per case in CASES: (id, command line, exit code, fragment the error line must contain). `{m}` is
tests/malformed/ (the files of the corpus), `{tmp}` a per-session directory with the inputs that cannot live in
git (a huge file, a directory named like a file, a FIFO, unreadable files). Adding a case is one row plus, if it
needs one, a file under tests/malformed/ (e.g. environment files: tests/malformed/environments/ and rows running
`drill run tabletop --env {m}/environments/...`).

Each case runs `harness.cli.main(argv)` in-process (the console entry itself, ~10 ms a case); a handful run the
installed `drill` command as a subprocess to show the entry point behaves the same. No case may start a lab:
DRILL_STATE_DIR points at a directory that must still not exist afterwards.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import ExitCode
from tests.timing import scaled

ROOT = Path(__file__).resolve().parents[2]
M = ROOT / "tests" / "malformed"
USAGE, HARNESS = ExitCode.USAGE, ExitCode.HARNESS_ERROR
LONG = "/tmp/" + "/".join(["d" * 250] * 20)  # 5 kB: longer than PATH_MAX

CASES: list[tuple[str, str, int, str]] = [
    # -- experiments, JSON: `drill run` refuses them before the lab is touched -------------------------------
    ("run-json-list", "run {m}/experiments/list.json", USAGE, "got a list"),
    ("run-json-scalar", "run {m}/experiments/scalar.json", USAGE, "got a number"),
    ("run-json-string", "run {m}/experiments/string.json", USAGE, "got a string"),
    ("run-json-null", "run {m}/experiments/null.json", USAGE, "got null"),
    ("run-json-invalid", "run {m}/experiments/invalid.json", USAGE, "not valid JSON at line 3, column 1"),
    ("run-json-trailing-comma", "run {m}/experiments/trailing-comma.json", USAGE, "line 1, column 29"),
    ("run-json-empty", "run {m}/experiments/empty.json", USAGE, "empty.json: empty file"),
    ("run-json-blank", "run {m}/experiments/blank.json", USAGE, "blank.json: empty file"),
    ("run-json-latin1", "run {m}/experiments/latin1.json", USAGE, "not UTF-8 text (byte 0xdc"),
    ("run-json-binary", "run {m}/experiments/binary.json", USAGE, "binary.json is a binary file"),
    ("run-no-title", "run {m}/experiments/no-title.json", USAGE, "title: missing"),
    ("run-title-number", "run {m}/experiments/title-number.json", USAGE, "title: must be a non-empty string, got 7"),
    ("run-no-method", "run {m}/experiments/no-method.json", USAGE, "method: missing"),
    ("run-method-object", "run {m}/experiments/method-object.json", USAGE, "method: must be a list of activities"),
    ("run-method-empty", "run {m}/experiments/method-empty.json", USAGE, "method: must hold at least one"),
    ("run-activity-string", "run {m}/experiments/activity-string.json", USAGE, "method[1]: an activity must be an "
                                                                                "object, got a string 'fail-over'"),
    ("run-activity-unknown-type", "run {m}/experiments/activity-unknown-type.json", USAGE, "got 'attack'"),
    ("run-activity-no-name", "run {m}/experiments/activity-no-name.json", USAGE, "method[0].name"),
    ("run-provider-list", "run {m}/experiments/provider-list.json", USAGE, "method[0].provider: must be an object"),
    ("run-provider-unknown-type", "run {m}/experiments/provider-unknown-type.json", USAGE, "got 'ruby'"),
    ("run-python-no-module", "run {m}/experiments/python-no-module.json", USAGE, "python provider without a module"),
    ("run-python-no-func", "run {m}/experiments/python-no-func.json", USAGE, "python provider without a func"),
    ("run-unknown-module", "run {m}/experiments/unknown-module.json", USAGE, "'harness.nosuchmodule' cannot be "
                                                                              "imported"),
    ("run-unknown-func", "run {m}/experiments/unknown-func.json", USAGE, "has no function 'no_such_function'"),
    ("run-arguments-list", "run {m}/experiments/arguments-list.json", USAGE, "provider.arguments: must be an object"),
    ("run-configuration-list", "run {m}/experiments/configuration-list.json", USAGE, "configuration: must be an "
                                                                                      "object, got a list"),
    ("run-config-writers-string", "run {m}/experiments/config-writers-string.json", USAGE,
     "drill_writers: must be an integer >= 1, got 'four'"),
    ("run-config-write-rate-negative", "run {m}/experiments/config-write-rate-negative.json", USAGE,
     "drill_write_rate: must be a number > 0 (or null: as fast as possible), got -200"),
    ("run-config-approvals-number", "run {m}/experiments/config-approvals-number.json", USAGE,
     "drill_approvals: must be a list of names, got 12"),
    ("run-config-probe-interval-zero", "run {m}/experiments/config-probe-interval-zero.json", USAGE,
     "drill_probe_interval_s: must be a number of seconds > 0, got 0"),
    ("run-config-environment-list", "run {m}/experiments/config-environment-list.json", USAGE,
     "drill_environment: must be a string, got ['lab']"),
    ("run-tolerance-float", "run {m}/experiments/tolerance-float.json", USAGE, "tolerance must either be"),
    ("run-ssh-list", "run {m}/experiments/ssh-list.json", USAGE, "steady-state-hypothesis: must be an object"),
    ("run-ssh-probes-object", "run {m}/experiments/ssh-probes-object.json", USAGE, "probes: must be a list"),
    ("run-rollbacks-object", "run {m}/experiments/rollbacks-object.json", USAGE, "rollbacks: must be a list"),
    ("run-rollbacks-item-number", "run {m}/experiments/rollbacks-item-number.json", USAGE,
     "rollbacks[0]: an activity must be an object, got a number 3"),
    ("run-secrets-string", "run {m}/experiments/secrets-string.json", USAGE, "secrets: must be an object"),
    ("run-secrets-inner-string", "run {m}/experiments/secrets-inner.json", USAGE, "secrets.k: must be an object"),
    ("run-pauses-string", "run {m}/experiments/pauses-string.json", USAGE, "method[0].pauses: must be an object"),
    ("run-controls-item", "run {m}/experiments/controls-item.json", USAGE, "controls[0]: must be an object, got a "
                                                                            "string 'x'"),
    ("run-extensions-object", "run {m}/experiments/ext-list.json", USAGE, "extensions: must be a list"),
    ("run-env-missing", "run {m}/experiments/env-missing.json", USAGE, "DRILL_CORPUS_UNSET_VARIABLE"),
    ("run-unknown-argument", "run {m}/experiments/unknown-arg.json", USAGE, "argument 'bogus' is not part of the "
                                                                             "function signature"),
    ("run-unknown-ref", "run {m}/experiments/ref-unknown.json", USAGE, "referenced activity 'nope'"),
    ("run-background-word", "run {m}/experiments/bg-true.json", USAGE, "background must be a boolean"),
    # -- experiments, YAML -----------------------------------------------------------------------------------
    ("run-yaml-list", "run {m}/experiments/list.yaml", USAGE, "got a list"),
    ("run-yaml-scalar", "run {m}/experiments/scalar.yaml", USAGE, "got a string"),
    ("run-yaml-invalid", "run {m}/experiments/invalid.yaml", USAGE, "not valid YAML at line 4, column 4"),
    ("run-yaml-tabs", "run {m}/experiments/tabs.yaml", USAGE, "'\\t'"),
    ("run-yaml-empty", "run {m}/experiments/empty.yml", USAGE, "empty.yml: empty file"),
    ("run-yaml-no-title", "run {m}/experiments/no-title.yaml", USAGE, "title: missing"),
    ("run-yaml-method-string", "run {m}/experiments/method-string.yaml", USAGE, "method: must be a list of "
                                                                                 "activities, got a string"),
    ("run-yaml-tolerance-dict", "run {m}/experiments/tolerance-dict-bad.yaml", USAGE, "tolerance type 'None'"),
    ("run-yaml-writers-bool", "run {m}/experiments/config-writers-bool.yaml", USAGE, "drill_writers: must be an "
                                                                                      "integer >= 1, got True"),
    # -- odd files as a target -------------------------------------------------------------------------------
    ("run-wrong-extension", "run {m}/experiments/experiment.txt", USAGE, "unknown target"),
    ("run-missing-file", "run {m}/experiments/no-such-file.json", USAGE, "does not exist"),
    ("run-directory", "run {tmp}/a-directory.json", USAGE, "a-directory.json' is a directory"),
    ("run-fifo", "run {tmp}/fifo.json", USAGE, "fifo.json' is not a regular file"),
    ("run-huge", "run {tmp}/huge.json", USAGE, "larger than the 8 MiB limit"),
    ("run-unreadable", "run {tmp}/unreadable.json", USAGE, "cannot read"),
    ("run-unreadable-io", "run {tmp}/mem.json", USAGE, "cannot read {tmp}/mem.json: Input/output error"),
    ("run-unknown-profile", "run nightly-chaos", USAGE, "unknown target 'nightly-chaos'"),
    # -- features --------------------------------------------------------------------------------------------
    ("run-feature-no-scenario", "run {m}/features/no-scenario.feature", USAGE, "no Scenario in feature"),
    ("run-feature-step-no-text", "run {m}/features/step-no-text.feature", USAGE, "line 4: step 'When' has no text"),
    ("run-feature-not-gherkin", "run {m}/features/not-gherkin-in-scenario.feature", USAGE,
     "line 3: not Gherkin: 'Gievn the embedded lab is up'"),
    ("run-feature-unknown-step", "run {m}/features/unknown-step.feature", USAGE,
     "no step definition matches When 'the moon falls on the data centre'"),
    ("run-feature-empty", "run {m}/features/empty.feature", USAGE, "empty file"),
    ("validate-feature-no-feature", "validate {m}/features/no-feature.feature", USAGE,
     "line 1, column 1: expected: #EOF, #Language, #TagLine, #FeatureLine, #Comment, #Empty, got 'Scenario"),
    ("validate-feature-comment-only", "validate {m}/features/comment-only.feature", USAGE, "no Feature"),
    ("validate-feature-no-scenario", "validate {m}/features/no-scenario.feature", USAGE, "no Scenario in feature "
                                                                                        "'region failover'"),
    ("validate-feature-step-no-text", "validate {m}/features/step-no-text.feature", USAGE, "step 'When' has no text"),
    ("validate-feature-keyword-only", "validate {m}/features/step-keyword-only.feature", USAGE,
     "line 3: step 'Given' has no text"),
    ("validate-feature-not-gherkin", "validate {m}/features/not-gherkin-in-scenario.feature", USAGE,
     "not Gherkin: 'Gievn the embedded lab is up'"),
    ("validate-feature-junk-after-steps", "validate {m}/features/junk-after-steps.feature", USAGE,
     "line 4, column 5: expected: #EOF"),
    ("validate-feature-unknown-step", "validate {m}/features/unknown-step.feature", USAGE,
     "'the moon falls on the data centre'"),
    ("validate-feature-bad-tag", "validate {m}/features/bad-tag.feature", USAGE, "bad tag '@smoke-test'"),
    ("validate-feature-unknown-tag", "validate {m}/features/unknown-tag.feature", USAGE,
     "tag '@nightly' is not a registered pytest marker"),
    ("run-feature-unknown-tag", "run {m}/features/unknown-tag.feature", USAGE, "tag '@nightly'"),
    ("validate-feature-tag-space", "validate {m}/features/tag-with-space.feature", USAGE, "A tag may not contain "
                                                                                         "whitespace"),
    ("validate-feature-no-steps", "validate {m}/features/scenario-no-steps.feature", USAGE,
     "scenario 'nothing happens' has no steps"),
    ("validate-feature-two-features", "validate {m}/features/two-features.feature", USAGE, "got 'Feature: b'"),
    ("validate-feature-table", "validate {m}/features/outline-no-examples-table.feature", USAGE,
     "inconsistent cell count"),
    ("validate-feature-empty", "validate {m}/features/empty.feature", USAGE, "empty.feature: empty file"),
    ("validate-feature-latin1", "validate {m}/features/latin1.feature", USAGE, "not UTF-8 text (byte 0xdc"),
    ("validate-feature-binary", "validate {m}/features/binary.feature", USAGE, "is a binary file"),
    # -- experiments through `drill validate` ----------------------------------------------------------------
    ("validate-json-list", "validate {m}/experiments/list.json", USAGE, "got a list"),
    ("validate-json-invalid", "validate {m}/experiments/invalid.json", USAGE, "not valid JSON at line 3"),
    ("validate-unknown-module", "validate {m}/experiments/unknown-module.json", USAGE, "'harness.nosuchmodule'"),
    ("validate-config-writers", "validate {m}/experiments/config-writers-string.json", USAGE, "got 'four'"),
    ("validate-wrong-extension", "validate {m}/experiments/experiment.txt", USAGE, "unknown file type '.txt'"),
    ("validate-directory", "validate {tmp}/a-directory.json", USAGE, "is a directory"),
    ("validate-huge", "validate {tmp}/huge.json", USAGE, "larger than the 8 MiB limit"),
    ("validate-missing", "validate {m}/no-such-file.yaml", USAGE, "no such file"),
    ("validate-unreadable-io", "validate {tmp}/mem.json", USAGE, "cannot read {tmp}/mem.json: Input/output error"),
    ("validate-unreadable-yaml", "validate {tmp}/mem.yaml", USAGE, "cannot read {tmp}/mem.yaml: Input/output error"),
    # -- plan overrides: `drill run --plan-overrides` refuses them before the lab; `drill validate` names why ---
    ("overrides-bad-yaml", "run tabletop --plan-overrides {m}/overrides/bad-yaml.yaml", USAGE,
     "invalid YAML in {m}/overrides/bad-yaml.yaml at line 4, column 4"),
    ("overrides-list", "run tabletop --plan-overrides {m}/overrides/list.yaml", USAGE, "must be a mapping"),
    ("overrides-scalar", "validate {m}/overrides/scalar.yaml", USAGE, "must be a mapping, got str"),
    ("overrides-unknown-key", "run tabletop --plan-overrides {m}/overrides/unknown-key.yaml", USAGE,
     "unknown top-level key 'objectives'"),
    ("overrides-unknown-service", "run tabletop --plan-overrides {m}/overrides/unknown-service.yaml", USAGE,
     "unknown service 'payroll-service'"),
    ("overrides-rto-word", "run tabletop --plan-overrides {m}/overrides/rto-word.yaml", USAGE,
     "services.voucher-service.rto: invalid duration 'fast'"),
    ("overrides-rto-negative", "run tabletop --plan-overrides {m}/overrides/rto-negative.yaml", USAGE,
     "invalid duration '-5s'"),
    ("overrides-rto-list", "validate {m}/overrides/rto-list.yaml", USAGE, "goals.rto: invalid duration [1, 2]"),
    ("overrides-gates-list", "run tabletop --plan-overrides {m}/overrides/gates-list.yaml", USAGE,
     "gates: Input should be a valid dictionary (got a list)"),
    ("overrides-weight-string", "validate {m}/overrides/weight-string.yaml", USAGE, "weight: Input should be a "
                                                                                    "valid integer"),
    ("overrides-both-spellings", "run tabletop --plan-overrides {m}/overrides/rto-both-spellings.yaml", USAGE,
     "given twice (as 'rto' and 'rto_s')"),
    ("overrides-threshold-percent", "validate {m}/overrides/threshold-percent.yaml", USAGE, "'150%' out of range"),
    ("overrides-latin1", "run tabletop --plan-overrides {m}/overrides/latin1.yaml", USAGE, "not UTF-8 text"),
    ("overrides-missing", "run tabletop --plan-overrides {m}/overrides/none.yaml", USAGE, "none.yaml' does not exist"),
    ("overrides-directory", "run tabletop --plan-overrides {m}/overrides", USAGE, "overrides' is not a file"),
    # -- command-line arguments ------------------------------------------------------------------------------
    ("cli-unknown-command", "rnu ci-smoke", USAGE, "No such command 'rnu'"),
    ("cli-unknown-option", "run ci-smoke --fast", USAGE, "No such option: --fast"),
    ("cli-run-no-target", "run", USAGE, "Missing argument 'target'"),
    ("cli-bad-approve", "run tabletop --approve dr_switch", USAGE, "--approve 'dr_switch' is not a gate"),
    ("cli-approve-empty-who", "run tabletop --approve dr_region_switch=", USAGE, "no approver after '='"),
    ("cli-bad-tier", "run tabletop --tier diamond", USAGE, "--tier 'diamond' is not a tier of the plan"),
    ("cli-report-dir-proc", "run tabletop --report-dir /proc/x", USAGE, "--report-dir '/proc/x' is not a writable "
                                                                        "directory"),
    ("cli-report-dir-file", "run tabletop --report-dir {m}/overrides/list.yaml", USAGE, "list.yaml' is not a "
                                                                                        "writable directory"),
    ("cli-report-dir-long", "run tabletop --report-dir " + LONG, USAGE, "File name too long"),
    ("cli-feature-report-dir-proc", "run {root}/features/region_failover.feature --report-dir /proc/x", USAGE,
     "--report-dir '/proc/x'"),
    ("cli-calibrate-k-word", "calibrate --k many", USAGE, "--k 'many' is not an integer"),
    ("cli-calibrate-k-negative", "calibrate --k -1", USAGE, "-1"),
    ("cli-calibrate-k-float", "calibrate --k 1.5", USAGE, "--k '1.5' is not an integer"),
    ("cli-calibrate-delay-zero", "calibrate --delay-ms 0", USAGE, "--delay-ms 0"),
    ("cli-calibrate-delay-huge", "calibrate --delay-ms 99999", USAGE, "--delay-ms 99999"),
    ("cli-calibrate-delay-word", "calibrate --delay-ms fast", USAGE, "--delay-ms 'fast'"),
    ("cli-calibrate-report-dir", "calibrate --report-dir /proc/x", USAGE, "--report-dir '/proc/x'"),
    ("cli-run-lang-unknown", "run ci-smoke --lang fr", USAGE, "--lang 'fr'"),
    ("cli-lab-scale-zero", "lab up --scale 0", USAGE, "'--scale'"),
    ("cli-lab-scale-word", "lab up --scale big", USAGE, "'big'"),
    ("cli-lab-scale-huge", "lab up --scale 1001", USAGE, "'1001'"),
    ("cli-lab-base-port-low", "lab up --base-port 80", USAGE, "--base-port 80 is out of range"),
    ("cli-lab-base-port-high", "lab up --base-port 70000", USAGE, "--base-port 70000 is out of range"),
    ("cli-lab-base-port-word", "lab up --base-port=http", USAGE, "'http'"),
    ("cli-backup-verify-no-key", "backup verify", USAGE, "Missing argument 'key'"),
    ("cli-backup-restore-no-into", "backup restore backups/x.dump", USAGE, "Missing option '--into'"),
    ("cli-backup-restore-bad-name", "backup restore backups/x.dump --into x;drop", USAGE, "'x;drop' must be a "
                                                                                          "lower-case identifier"),
    ("cli-backup-restore-protected", "backup restore backups/x.dump --into kerp", USAGE,
     "refusing to restore into 'kerp'"),
    ("cli-validate-no-path", "validate", USAGE, "Missing argument 'PATH'"),
    # an unusable state directory is a harness error (exit 1, as for `drill lab up`), still one line, no lab
    ("cli-run-state-dir-proc", "run tabletop --state-dir /proc/x", HARNESS, "state directory /proc/x is not "
                                                                            "writable"),
    ("cli-status-state-dir-file", "lab status --state-dir {m}/overrides/list.yaml", HARNESS, "unreadable lab state"),
    ("cli-validate-steps-dir", "validate {root}/features/region_failover.feature --steps-dir {m}", USAGE,
     "is not a Python package"),
]

#: rows also run through the installed `drill` command (a new process each: keep it to a handful)
SUBPROCESS = ("run-json-list", "run-feature-no-scenario", "cli-report-dir-proc", "cli-lab-scale-zero")


@pytest.fixture(scope="session")
def odd(tmp_path_factory) -> Path:
    """Inputs that cannot be kept in git: a directory named like a file, a FIFO, a 9 MB file, an unreadable one."""
    d = tmp_path_factory.mktemp("odd")
    (d / "a-directory.json").mkdir()
    os.mkfifo(d / "fifo.json")
    with open(d / "huge.json", "w") as f:
        f.write('{"title": "huge", "method": []' + " " * (9 * 1024 * 1024) + "}")
    (d / "unreadable.json").write_text('{"title": "t"}')
    (d / "unreadable.json").chmod(0)
    for name in ("mem.json", "mem.yaml"):  # a regular file even root cannot read (EIO at offset 0)
        (d / name).symlink_to("/proc/self/mem")
    return d


@pytest.fixture()
def env(tmp_path, monkeypatch) -> Path:
    """A state directory no case may create (it would mean a lab was started) and a scratch cwd."""
    state = tmp_path / "lab-must-not-exist"
    monkeypatch.setenv("DRILL_STATE_DIR", str(state))
    monkeypatch.setenv("DRILL_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.delenv("DRILL_APPROVALS", raising=False)
    monkeypatch.chdir(tmp_path)
    return state


def argv_of(cmd: str, odd: Path) -> list[str]:
    return [a.format(m=M, tmp=odd, root=ROOT) for a in shlex.split(cmd)]


def check(out: str, err: str, code: int, want_code: int, fragment: str, state: Path) -> None:
    text = out + err
    assert "Traceback" not in text, text
    assert code == want_code, text
    lines = [x for x in text.splitlines() if x.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith(("drill: error: ", "invalid ")), lines[0]
    assert fragment in lines[0], lines[0]
    assert not state.exists(), "a lab was started for a malformed input"


def test_the_corpus_is_big_enough_and_its_ids_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 60
    assert set(SUBPROCESS) <= set(ids)


@pytest.mark.parametrize("case,cmd,want,fragment", CASES, ids=[c[0] for c in CASES])
def test_malformed_input(case, cmd, want, fragment, odd, env, capsys):
    if case == "run-unreadable" and os.geteuid() == 0:
        pytest.skip("root reads a file with mode 000")
    with pytest.raises(SystemExit) as exc:
        main(argv_of(cmd, odd))
    out, err = capsys.readouterr()
    check(out, err, exc.value.code, want, fragment.format(m=M, tmp=odd, root=ROOT), env)


@pytest.mark.parametrize("case", SUBPROCESS)
def test_the_console_entry_behaves_the_same(case, odd, env):
    _, cmd, want, fragment = next(c for c in CASES if c[0] == case)
    drill = shutil.which("drill", path=str(Path(sys.executable).parent)) or "drill"
    p = subprocess.run([drill, *argv_of(cmd, odd)], capture_output=True, text=True, timeout=scaled(300),
                       env={**os.environ, "COLUMNS": "60"})
    check(p.stdout, p.stderr, p.returncode, want, fragment.format(m=M, tmp=odd, root=ROOT), env)


def test_strict_gherkin_still_accepts_what_gherkin_is_for(tmp_path):
    """Strictness must not refuse good features: a narrative under Feature and Rule, comments, a registered tag,
    a Scenario Outline with its Examples, And/But/* steps."""
    from harness.drill.validate import validate_feature

    good = tmp_path / "good.feature"
    good.write_text("""@slow
Feature: backup drill
  As an operator I want the backup restored
  so that the plan's RPO holds.

  Rule: restores need their gate
    The gate is approved for the lab only.

    Background:
      # comments are fine anywhere
      Given the embedded lab is up

    @integration
    Scenario Outline: the gate is approved
      Given a recent backup of the primary database exists
      And the gate "<gate>" is approved for the lab
      * the DR region is ready or scalable

      Examples:
        | gate                     |
        | data_restore_from_backup |
""")
    r = validate_feature(good, steps_dir=ROOT / "steps")
    assert r.ok, r.line()
    assert r.summary == "feature: 1 scenario, 4 steps"
