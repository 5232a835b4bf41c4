"""The plan's business functions (section 2.1) against what a drill measures: probed through a catalog service, or not modelled."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from harness.core.plan import Plan

#: business function -> (catalog service whose measurement stands for it, how the drill exercises it).
#: A function absent here is not modelled by the lab's reference app and workload.
MODELLED: dict[str, tuple[str, str]] = {
    "authentication and authorization": ("authentication", "probe: POST /auth/login, GET /auth/me (JWT + Redis session)"),
    "voucher lookup": ("voucher-service", "probe: GET /vouchers/{id}"),
    "tax invoice issuing": ("tax-invoice-service", "probe: POST /tax-invoices (gap-free number, Popbill)"),
    "voucher creation and editing": ("voucher-service", "ledger writers: POST /vouchers (creation; editing is not modelled)"),
}


def business_functions(plan: Plan, objectives: Iterable[Mapping[str, Any]], tier: str | None = None) -> list[dict[str, Any]]:
    """One entry per business function of the plan's priority classes: the class's targets (tightened by the tier),
    the catalog service measured for it and whether that measurement meets the class's targets; a function the
    lab does not exercise has status "not_modelled" and is not judged."""
    by_service = {str(o.get("service")): o for o in objectives}
    t = plan.tier(tier) if tier else None
    out: list[dict[str, Any]] = []
    for p in sorted(plan.priorities, key=lambda x: x.level):
        rto = min(p.rto_s, t.rto_s) if t else p.rto_s
        rpo = min(p.rpo_s, t.rpo_s) if t else p.rpo_s
        for fn in p.functions:
            entry: dict[str, Any] = {"function": fn, "priority": p.name, "rto_target_s": rto, "rpo_target_s": rpo}
            if fn not in MODELLED:
                out.append({**entry, "status": "not_modelled", "service": None, "how": None, "met": None})
                continue
            svc, how = MODELLED[fn]
            o = by_service.get(svc)
            if o is None or o.get("measured") is False:
                out.append({**entry, "status": "not_measured", "service": svc, "how": how, "met": None})
                continue
            rto_m, rpo_m = o.get("rto_measured_s"), o.get("rpo_measured_s")
            met = rto_m is not None and rto_m <= rto and (rpo_m is None or rpo_m <= rpo)
            out.append({**entry, "status": "probed", "service": svc, "how": how, "rto_measured_s": rto_m,
                        "rpo_measured_s": rpo_m, "met": met})
    return out
