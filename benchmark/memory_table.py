"""The markdown report of ``benchmark.memory_bench``: the table (bytes in MB, ratios to
uniform's run) and the targets checked on the run."""
from __future__ import annotations

import math

FLOOR = "floor"          # the floor run's spec (memory_bench sizes it in the child)
MB = 1e6


def _b(x) -> str:
    return "-" if x is None else f"{x / MB:,.1f}"


def _r(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"


def table(report: dict) -> str:
    """The markdown table: bytes in MB (1e6), ratios to uniform's run."""
    rows = report["results"]
    uni = next((r for r in rows if r["spec"] == "uniform" and "error" not in r), None)
    floor = next((r for r in rows if r["spec"] == FLOOR and "error" not in r), None)
    m = report["meta"]
    lines = [
        f"# Memory at Criteo Kaggle cardinalities (scale {m['scale']:g}, D=16)", "",
        f"- command: `{m['command']}`", f"- commit: {m['commit']}, torch {m['torch']}, "
        f"started {m['started']}",
        f"- machine: {m['machine'].get('cpu', '?')}, {m['machine'].get('cpus')} cores, "
        f"{m['machine'].get('mem_total_gib', '?')} GiB ({m['machine'].get('mem_available_gib_at_start', '?')} "
        f"GiB available at start); load average at start {m['load_at_start'][0]:.2f}, at end "
        f"{m['load_at_end'][0]:.2f}",
        f"- data: {m['data']}, skew {m['skew']}; {m['steps']} steps of batch {m['batch']}, "
        f"{m['threads']} thread(s) per process, each method in a fresh process",
        "- MB = 1e6 bytes, all above the process's own baseline (interpreter + torch + batches). "
        "`measured` = anonymous RSS high-water mark (reset per window) = the trainer's "
        "`mem/train_peak_bytes`; `process` = whole-RSS peak; `- floor` = measured minus the floor "
        "run (dense model, activations, batches: what no method can avoid); ratios to uniform.",
        "- events: pruning events incl. post-training pruning; transient = peak inside the "
        "event above the memory just before it. Times on a shared machine are upper bounds.", "",
        "| method | ledger peak | ledger final | measured | process | - floor | - floor / ledger "
        "| measured / uniform | process / uniform | events | event s (max) | transient max "
        "| transient / ledger |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['spec']} | {r['error']} |" + " |" * 11)
            continue
        ev = r["events"]
        worst = max((e["transient_bytes"] for e in ev), default=None)
        secs = max((e["seconds"] for e in ev), default=None)
        emb = r["measured_peak_bytes"] - floor["measured_peak_bytes"] if floor else None
        lines.append("| " + " | ".join([
            r["spec"], _b(r["ledger_peak_bytes"]), _b(r["ledger_final_bytes"]),
            _b(r["measured_peak_bytes"]), _b(r["process_peak_above_baseline_bytes"]), _b(emb),
            _r(emb / r["ledger_peak_bytes"]) if emb is not None and r["ledger_peak_bytes"] else "-",
            _r(r["measured_peak_bytes"] / uni["measured_peak_bytes"]) if uni else "-",
            _r(r["process_peak_above_baseline_bytes"] / uni["process_peak_above_baseline_bytes"])
            if uni else "-",
            str(len(ev)), "-" if secs is None else f"{secs:.2f}", _b(worst),
            _r(worst / r["ledger_peak_bytes"]) if worst is not None and r["ledger_peak_bytes"]
            else "-"]) + " |")
    return "\n".join(lines + targets(report)) + "\n"


IN_TRAINING = ("fiited", "adaembed", "itep")


def targets(report: dict) -> list[str]:
    """Issue 14's targets, checked on this run: one line per method and target."""
    rows = [r for r in report["results"] if "error" not in r]
    uni = next((r for r in rows if r["spec"] == "uniform"), None)
    floor = next((r for r in rows if r["spec"] == FLOOR), None)
    if uni is None:
        return []
    out = ["", "## Targets", "",
           "| method | target | value | met |", "|---|---|---|---|"]

    def line(spec, what, value, ok):
        out.append(f"| {spec} | {what} | {value} | {'yes' if ok else '**no**'} |")

    for r in rows:
        name, budget = r["config"].get("name"), float(r["config"].get("budget", 1.0))
        ev = r["events"]
        if name in IN_TRAINING and budget in (1 / 16, 1 / 64):
            cap = 1 / 10 if budget == 1 / 16 else 1 / 30
            ratio = r["process_peak_above_baseline_bytes"] / uni["process_peak_above_baseline_bytes"]
            line(r["spec"], f"process peak <= {cap:.3f} x uniform's", f"{ratio:.3f}", ratio <= cap)
            secs = max((e["seconds"] for e in ev), default=0.0)
            line(r["spec"], "events <= 2 s each", f"{secs:.2f} s (max of {len(ev)})", secs <= 2)
            worst = max((e["transient_bytes"] for e in ev), default=0)
            frac = worst / r["ledger_peak_bytes"]
            line(r["spec"], "event transient <= 10% of ledger", f"{100 * frac:.1f}%", frac <= 0.1)
        if name == "post_prune":
            ratio = r["train_peak_bytes"] / uni["train_peak_bytes"]
            line(r["spec"], "training peak = uniform's", f"{ratio:.3f} x", ratio >= 0.95)
        if floor is not None and r is not floor:
            emb = r["measured_peak_bytes"] - floor["measured_peak_bytes"]
            gap = abs(r["ledger_peak_bytes"] - emb) / emb if emb > 0 else float("inf")
            line(r["spec"], "ledger within 5% of measured - floor", f"{100 * gap:.1f}%", gap <= 0.05)
    return out
