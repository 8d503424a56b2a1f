"""reports/rollout/<version>/replay.html: a replay's verdict, its numbers per window and the class
flips, as tables in one self-contained page (no plot, nothing loaded from elsewhere)."""

from __future__ import annotations

from typing import Any

from forgeml.monitoring.report import VERDICT_COLOURS, esc, fmt

VERDICTS = {**VERDICT_COLOURS, "passed": VERDICT_COLOURS["no_drift"], "refused": VERDICT_COLOURS["drift"]}


def window_row(window: dict[str, Any]) -> dict[str, Any]:
    """One window's line of the table: the numbers the verdict reads, and its refusals."""
    estimated = window.get("estimated") or {}
    test = window.get("prediction_test") or {}
    shift = window.get("score_shift") or {}
    measured = window.get("measured") or {}
    return {
        "start": (window.get("window") or {}).get("start"),
        "end": (window.get("window") or {}).get("end"),
        "requests": window["rows"],
        "unanswered": window["unanswered"],
        "agreement": window.get("agreement"),
        "score shift": next((value for key, value in shift.items() if key != "rows"), None),
        "prediction test": test.get("test") and f"{test['test']} {fmt(test.get('statistic'))}",
        "predictions moved": test.get("drifted"),
        "estimated accuracy (production)": (estimated.get("production") or {}).get("accuracy"),
        "estimated accuracy (candidate)": (estimated.get("candidate") or {}).get("accuracy"),
        "labelled": measured.get("labelled_rows"),
        "measured (production)": metrics_text(measured.get("production")),
        "measured (candidate)": metrics_text(measured.get("candidate")),
        "judged": window["judged"],
        "refusals": "; ".join(window["refusals"]) or None,
    }


def metrics_text(metrics: dict[str, float] | None) -> str | None:
    return ", ".join(f"{name} {fmt(value)}" for name, value in metrics.items()) if metrics else None


def flips_table(flips: dict[str, dict[str, int]]) -> str:
    """Production's labels down, the candidate's across; agreement on the diagonal."""
    after = sorted({label for row in flips.values() for label in row})
    head = "<th>production \\ candidate</th>" + "".join(f"<th>{esc(label)}</th>" for label in after)
    body = "".join(
        f"<tr><th>{esc(before)}</th>"
        + "".join(
            f'<td class="{"same" if label == before else "flip"}">{row.get(label, 0)}</td>' for label in after
        )
        + "</tr>"
        for before, row in sorted(flips.items())
    )
    return f"<table class='flips'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_replay_html(report: dict[str, Any]) -> str:
    facts = {
        "model": report["model"],
        "candidate": report["candidate"],
        "production (requests answered)": ", ".join(f"{v} ({n})" for v, n in report["production"].items()),
        "source": report["source"],
        **{f"threshold {key}": value for key, value in report["thresholds"].items()},
        "exit code": report["exit_code"],
        "created": report["created_at"],
    }
    rows = [window_row(window) for window in report["windows"]]
    head = "".join(f"<th>{esc(column)}</th>" for column in rows[0]) if rows else ""
    body = "".join(
        f'<tr class="{"refused" if row["refusals"] else ""}">'
        + "".join(f"<td>{esc(fmt(value))}</td>" for value in row.values())
        + "</tr>"
        for row in rows
    )
    flips = report["overall"].get("flips")
    return PAGE.format(
        colour=VERDICTS.get(report["verdict"], "#000"),
        verdict=esc(report["verdict"].replace("_", " ")),
        candidate=esc(report["candidate"]),
        message=esc(report["message"]),
        facts="".join(f"<tr><th>{esc(k)}</th><td>{esc(fmt(v))}</td></tr>" for k, v in facts.items()),
        count=len(rows),
        head=head,
        body=body,
        flips=flips_table(flips) if flips else "<p>A regression model: no classes to flip.</p>",
    )


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>forgeml replay of {candidate}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }}
.verdict {{ color: {colour}; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }}
th, td {{ border: 1px solid #d0d7de; padding: 0.2rem 0.5rem; text-align: left; }}
tr.refused td, td.flip {{ background: #ffebe9; }}
td.same {{ background: #dafbe1; }}
</style></head><body>
<h1>Replay of {candidate}: <span class="verdict">{verdict}</span></h1>
<p>{message}</p>
<table class="facts">{facts}</table>
<h2>{count} window(s)</h2>
<table class="windows"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Class flips, every replayed request</h2>
{flips}
</body></html>
"""
