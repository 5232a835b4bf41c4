"""Message catalog of the human-readable reports (report.md, report.html, console summary, notifications): en, ko.

gettext-style: the English text is the message id; `translator("ko")` returns a function that looks it up in the
Korean catalog. The Korean wording follows the plan's own terms (checklist items, disaster levels, priorities).
report.json never changes with the language: only what people read is translated.
"""

from __future__ import annotations

import os
from typing import Any

from harness.errors import UsageError

__all__ = ["CHECKLIST", "LANGS", "DEFAULT_LANG", "SERVICE_NAMES", "Translator", "check_lang", "checklist_text",
           "lang_from", "service_label", "translator"]

LANGS = ("en", "ko")
DEFAULT_LANG = "en"

#: Korean messages; the key is the English text (format placeholders kept as they are).
KO: dict[str, str] = {
    # verdicts
    "PASSED": "통과",
    "FAILED: objectives missed": "실패: 복구 목표 미달",
    "FAILED: integrity violation": "실패: 데이터 정합성 위반",
    "FAILED: checklist items failed": "실패: 체크리스트 항목 실패",
    "FAILED: refused by safety": "실패: 안전장치가 거부함",
    "FAILED: harness error": "실패: 하네스 오류",
    "FAILED": "실패",
    "ABORTED": "중단됨",
    # objective reasons
    "not measured in this run": "이번 실행에서 측정되지 않음", "service never recovered": "서비스가 복구되지 않음",
    "RTO {m} exceeds target {t}": "RTO {m}이(가) 목표 {t} 초과", "RPO not measured": "RPO 측정 안 됨",
    "RPO {m} exceeds target {t}": "RPO {m}이(가) 목표 {t} 초과", "objective not met": "목표 미달",
    "Level {level} ({name}): downtime {m} measured, {o} allowed on the drill clock ({e} x {s}): {result}":
        "재해 레벨 {level} ({name}): 측정된 중단 시간 {m}, 훈련 시계 기준 허용 {o} ({e} x {s}): {result}",
    # headings and labels
    "Drill report: {kind}": "DR 훈련 보고서: {kind}",
    "exit code {code}": "종료 코드 {code}",
    "Run": "실행 ID", "Kind": "훈련 종류", "Target": "대상", "Environment": "환경", "Started": "시작",
    "Ended": "종료", "Duration": "소요 시간",
    "Recovery objectives": "복구 목표 (RTO/RPO)",
    "{met} of {total} services met their objectives.": "서비스 {total}개 중 {met}개가 복구 목표를 달성했습니다.",
    "{met} of {total} services met their recovery time (RTO) and recovery point (RPO) objectives.":
        "서비스 {total}개 중 {met}개가 복구 목표 시간(RTO)과 복구 시점 목표(RPO)를 달성했습니다.",
    "Service": "서비스", "Priority": "우선순위", "RTO target": "RTO 목표", "RTO measured": "RTO 측정값",
    "RPO target": "RPO 목표", "RPO measured": "RPO 측정값", "RPO basis": "RPO 측정 근거", "Result": "결과",
    "met": "달성", "missed": "미달", "not judged": "판정 안 함", "not measured": "측정 안 됨",
    "n/a (stateless)": "해당 없음 (상태 없음)", "not recovered": "복구되지 않음",
    "missed: {reason}": "미달: {reason}",
    "No objectives were measured in this run.": "이번 실행에서는 측정된 복구 목표가 없습니다.",
    "No objectives were measured.": "측정된 복구 목표가 없습니다.",
    "RTO phase breakdown": "RTO 단계별 분석",
    "Time from fault injection to each phase, per service.": "서비스별로 장애 주입부터 각 단계까지 걸린 시간입니다.",
    "Probe latency": "프로브 응답 시간", "Probes": "프로브 수", "Errors": "오류",
    "Writes during the drill": "훈련 중 쓰기",
    "Data integrity": "데이터 정합성", "Check": "검사", "Status": "상태", "Details": "상세",
    "No integrity checks were run.": "정합성 검사를 실행하지 않았습니다.",
    "Checklist": "체크리스트", "Item": "항목", "Expected": "기대 결과", "Observed": "관측 결과",
    "No checklist items were recorded.": "기록된 체크리스트 항목이 없습니다.",
    "Before the test": "사전 점검 (pre_test)", "During the test": "테스트 중 (during_test)",
    "After the test": "사후 점검 (post_test)",
    "Key events": "주요 이벤트", "Time": "시각", "Since fault": "장애 후 경과", "Event": "이벤트",
    "{n} more events are in report.json.": "나머지 이벤트 {n}개는 report.json에 있습니다.",
    "No faults, failovers, checks or notes were recorded.": "기록된 장애, 페일오버, 검사, 메모가 없습니다.",
    "API calls of the dry run (none was sent)": "드라이런의 API 호출 (실제로 보내지 않음)",
    "API": "API", "Operation": "작업", "Resource": "리소스", "Parameters": "파라미터",
    "Notes": "메모", "Key": "키", "Value": "값",
    "_Full data in report.json, the timeline chart in report.html, CI results in junit.xml._":
        "_전체 데이터는 report.json, 타임라인 차트는 report.html, CI 결과는 junit.xml에 있습니다._",
    "pass": "통과", "fail": "실패", "warning": "경고", "skipped": "건너뜀", "unknown": "알 수 없음",
    # write counts
    "Attempted": "시도", "Acknowledged": "확인 응답", "Lost": "유실", "Recovered": "복구됨",
    "Unexpected": "예상 밖", "Indeterminate": "결과 불명",
    "lost = acknowledged writes missing after recovery (data loss); "
    "recovered = writes with an unknown outcome (timeout, dropped connection) that turned out to be stored; "
    "unexpected = stored records nobody ever attempted (must be 0).":
        "유실 = 복구 후 사라진 확인 응답된 쓰기(데이터 손실); 복구됨 = 결과를 알 수 없던 쓰기(타임아웃, 연결 끊김) 중 "
        "실제로 저장된 것; 예상 밖 = 아무도 시도하지 않았는데 저장된 레코드(0이어야 함).",
    "Writes were not measured: no final read happened in this run, so nothing can be said about lost writes.":
        "쓰기는 측정되지 않았습니다: 이번 실행에서 최종 읽기가 없었으므로 유실 여부를 말할 수 없습니다.",
    "No writes were recorded.": "기록된 쓰기가 없습니다.",
    "{lost} of {ack} acknowledged writes were lost and {unexpected} unexpected records appeared.":
        "확인 응답된 쓰기 {ack}건 중 {lost}건이 유실되었고 예상 밖 레코드 {unexpected}건이 나타났습니다.",
    "All {ack} acknowledged writes survived; no unexpected records.":
        "확인 응답된 쓰기 {ack}건이 모두 보존되었고 예상 밖 레코드는 없습니다.",
    "Measured RPO {rpo}, {lost} acknowledged write(s) lost": "측정된 RPO {rpo}, 확인 응답된 쓰기 {lost}건 유실",
    " (last acknowledged write before the fault: {before}; last one that survived: {surviving})":
        " (장애 전 마지막 확인 응답 쓰기: {before}; 보존된 마지막 쓰기: {surviving})",
    # html only
    "Drill report {kind} {run_id}: {verdict}": "DR 훈련 보고서 {kind} {run_id}: {verdict}",
    "Drill": "훈련", "on": "대상", "unknown target": "알 수 없는 대상",
    "Services within objectives": "목표를 달성한 서비스", "Acknowledged writes lost": "유실된 확인 응답 쓰기",
    "Integrity checks passed": "통과한 정합성 검사", "Checklist: pass / fail / skipped": "체크리스트: 통과 / 실패 / 건너뜀",
    "What was run": "실행 내용", "Timeline": "타임라인", "no probe data": "프로브 데이터 없음",
    "The timeline chart could not be drawn: {e}": "타임라인 차트를 그릴 수 없습니다: {e}",
    "Time 0 is the fault injection. Top: each probe of each service through the global endpoint "
    "(green succeeded, red failed). Bottom: writes acknowledged per 100 ms. Vertical lines mark the fault and "
    "the failover steps.":
        "시각 0은 장애 주입 시점입니다. 위: 글로벌 엔드포인트를 통한 서비스별 프로브(초록 성공, 빨강 실패). "
        "아래: 100ms마다 확인 응답된 쓰기 수. 세로선은 장애와 페일오버 단계를 표시합니다.",
    "Where the recovery time went": "복구 시간의 구성",
    "Generated by drill at {at}. Full data: report.json; CI results: junit.xml.":
        "drill이 {at}에 생성했습니다. 전체 데이터: report.json, CI 결과: junit.xml.",
    # console
    "Writes": "쓰기", "Integrity": "정합성", "Report": "보고서",
    "not measured.": "측정 안 됨.",
    "{p} pass, {f} fail, {w} warning": "통과 {p}, 실패 {f}, 경고 {w}",
    "{p} pass, {f} fail, {s} skipped": "통과 {p}, 실패 {f}, 건너뜀 {s}",
    "{kind} on {target}": "{target}에서 {kind}",
}

#: The plan's checklist (section 7.3) in its own Korean words, by checklist id: (item, expected).
CHECKLIST: dict[str, tuple[str, str]] = {
    "backups_recent": ("백업 상태 확인", "최근 5개 백업 파일 존재"),
    "replica_lag": ("복제 지연 확인", "복제 지연 60초 미만"),
    "dr_cluster_ready": ("DR 클러스터 상태", "모든 노드 Ready (또는 확장 가능)"),
    "failover_started": ("페일오버 시작", "페일오버가 시작되고 기록됨"),
    "traffic_switched": ("DNS 전환 확인", "글로벌 엔드포인트가 DR 리전으로 라우팅"),
    "service_health": ("서비스 가용성 확인", "글로벌 엔드포인트의 /health가 HTTP 200"),
    "data_integrity": ("데이터 정합성 검증", "모든 검증 통과"),
    "rto_measured": ("RTO 측정", "< 4시간"),
    "rpo_measured": ("RPO 측정", "< 1시간"),
    "failback": ("페일백 실행", "Primary로 트래픽 복귀"),
}

#: Catalog services with the plan's Korean business functions (section 2.1).
SERVICE_NAMES: dict[str, str] = {
    "authentication": "인증/인가",
    "api-gateway": "API 게이트웨이",
    "voucher-service": "전표 서비스",
    "tax-invoice-service": "세금계산서 발행",
}


class Translator:
    """`t("English text", **fields)`: the text in the chosen language, formatted; unknown ids stay English
    and are remembered in `missing` (a test keeps the Korean catalog complete)."""

    def __init__(self, lang: str) -> None:
        self.lang = check_lang(lang)
        self.catalog: dict[str, str] = KO if self.lang == "ko" else {}
        self.missing: set[str] = set()

    def __call__(self, text: str, **fields: Any) -> str:
        if self.lang != "en":
            out = self.catalog.get(text)
            if out is None:
                self.missing.add(text)
                out = text
        else:
            out = text
        return out.format(**fields) if fields else out


def check_lang(lang: str | None) -> str:
    """The language code, or UsageError (exit 2) naming a language that is not en or ko."""
    value = (lang or DEFAULT_LANG).strip().lower()
    if value not in LANGS:
        raise UsageError(f"--lang {lang!r} is not a report language ({', '.join(LANGS)})")
    return value


def translator(lang: str | None = None) -> Translator:
    return Translator(lang or DEFAULT_LANG)


def lang_from(configuration: Any = None) -> str:
    """The report language of a run: configuration `drill_lang`, else $DRILL_LANG, else en."""
    value = None
    if isinstance(configuration, dict):
        value = configuration.get("drill_lang")
    return check_lang(value or os.environ.get("DRILL_LANG") or DEFAULT_LANG)


def checklist_text(item: dict[str, Any], lang: str) -> tuple[str, str]:
    """(item, expected) of a report checklist entry in the language (the plan's Korean terms for ko)."""
    if lang == "ko" and item.get("id") in CHECKLIST:
        return CHECKLIST[str(item["id"])]
    return str(item.get("item", "?")), str(item.get("expected", ""))


def service_label(service: str, lang: str) -> str:
    """A catalog service as a reader names it: "voucher-service (전표 서비스)" in Korean."""
    if lang == "ko" and service in SERVICE_NAMES:
        return f"{service} ({SERVICE_NAMES[service]})"
    return service

