"""EXPLAIN text of a plan: rewritten SQL, then every rule in order with its verdicts and reasons."""

from __future__ import annotations

from sparkscore.optimizer.dialect import generate


def explain_text(plan) -> str:
    lines = ["== rewritten SQL ==", generate(plan.expression, plan.dialect, pretty=True), "", "== models =="]
    lines += [f"  {m.name}/{m.version} sha256={m.sha256[:12]}" for m in plan.models] or ["  (none)"]
    lines += ["", "== rules =="]
    seen: list[str] = []
    for d in plan.decisions:
        if d.rule not in seen:
            seen.append(d.rule)
            lines.append(f"{d.rule}:")
        lines.append(f"  {'fired   ' if d.fired else 'declined'}  {d.reason}")
    if plan.udfs:
        lines += ["", "== UDFs =="]
        lines += [f"  {u.name}({', '.join(u.inputs)}) -> {u.output_type}" for u in plan.udfs]
    return "\n".join(lines)
