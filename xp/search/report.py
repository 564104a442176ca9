"""The study report of `xp search`: trials, the expected best score against the number of trials,
each confirmed configuration's search score against its score on fresh seeds (the winner's
curse), the confirmed ranking, and the winner as a ready-to-run `xp repeat` line.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from xp import stats
from xp.config import higher_is_better
from xp.record.workspace import Workspace
from xp.report import _fmt, pyplot, render_html, render_markdown

PLOTS = ("expected_max.png", "search_vs_confirmed.png")


def _ranking(repeat_ids: list[str], metric: str) -> dict[str, Any] | None:
    """`xp compare`'s ranking (Holm-adjusted ties) of the confirmation repeats' seeds."""
    from xp.compare import CompareError, rank_groups
    from xp.record import track

    runs = [r for rid in repeat_ids for r in track.children_of(rid)]
    try:
        return rank_groups(runs, metric)
    except CompareError:
        return None


def summarize(study: Any, counted: list[Any], space: dict, confirmed: list[dict[str, Any]],
              metric: str, project: str, overrides: list[str],
              study_run: str) -> dict[str, Any]:  # fmt: skip
    """Everything the report and the terminal show, JSON-serialisable (`counted`: the study's
    trials within its budget)."""
    better_high = higher_is_better(metric)
    test_metric = "test/" + metric.rsplit("/", 1)[-1]
    trials = [{"number": t.number, "state": t.state.name.lower(), "value": t.value,
               "params": dict(t.params)} for t in counted]  # fmt: skip
    values = [t["value"] for t in trials if t["state"] == "complete"]
    out: dict[str, Any] = {
        "metric": metric, "test_metric": test_metric, "project": project,
        "higher_is_better": better_high, "trials": trials, "study_name": study.study_name,
        "confirmed": [], "winner": None,
    }  # fmt: skip
    if values:
        low, high = stats.expected_max_band(values, better_high)
        out["expected_max"] = {
            "values": stats.expected_max_unbiased(values, better_high).tolist(),
            "band_low": low.tolist(), "band_high": high.tolist(),
        }  # fmt: skip
    sign = 1 if better_high else -1
    for c in confirmed:
        st = c["summary"]["stats"]
        on_search = st.get(metric, {}).get("successful", {})
        on_test = st.get(test_metric, {}).get("successful", {})
        mean = on_search.get("mean")
        out["confirmed"].append({
            "trial": c["trial"], "overrides": c["overrides"], "repeat_id": c["repeat_id"],
            "search_value": c["search_value"], "confirmed": on_search, "test": on_test,
            # how much the search overstated this configuration, in metric units (> 0: it did)
            "gap": None if mean is None else sign * (c["search_value"] - mean),
            "failed_seeds": c["summary"]["failed_seeds"],
        })  # fmt: skip
    ids = [c["repeat_id"] for c in confirmed]
    out["ranking"] = {m: _ranking(ids, m) for m in (metric, test_metric)} if ids else {}
    ranked = (out["ranking"].get(metric) or {}).get("groups") or []
    if ranked and out["confirmed"]:
        top = ranked[0]["run_ids"][0]
        from xp.record import track

        winner_repeat = track.get_run(top).data.tags.get("xp.group")
        win = next(c for c in out["confirmed"] if c["repeat_id"] == winner_repeat)
        seeds = len(confirmed[0]["summary"]["seeds"])
        command = ["xp", "repeat", project, *overrides, *win["overrides"], "--seeds", str(seeds)]
        tied = [g["config_hash"] for g in ranked[1:] if g.get("tied_with_top")]
        out["winner"] = {**win, "tied_with": tied, "command": shlex.join(command)}
        out["search_winner_gap"] = out["confirmed"][0]["gap"]  # the best trial's
    return out


def sections(s: dict[str, Any]) -> list[tuple[str, list[list[str]] | str]]:
    metric, parts = s["metric"], []
    states = [t["state"] for t in s["trials"]]
    head = (f"{len(states)} trials ({states.count('complete')} complete, {states.count('pruned')} "
            f"pruned, {states.count('fail')} failed), scored on {metric}.")  # fmt: skip
    w = s.get("winner")
    if w:
        c = w["confirmed"]
        head += (
            f" Winner: trial {w['trial']} ({' '.join(w['overrides'])}): {metric} "
            f"{_fmt(c.get('mean'))} [{_fmt(c.get('ci95_low'))}, {_fmt(c.get('ci95_high'))}] on "
            f"{c.get('n', 0)} fresh seeds, against {_fmt(w['search_value'])} in the search: the "
            f"search winner's curse is {_fmt(s.get('search_winner_gap'))}."
        )
    parts.append(("Summary", head))
    rows = [["trial", "state", metric, *sorted({k for t in s["trials"] for k in t["params"]})]]
    for t in s["trials"]:
        rows.append([str(t["number"]), t["state"], _fmt(t["value"]),
                     *[_fmt(t["params"].get(k)) for k in rows[0][3:]]])  # fmt: skip
    parts.append(("Trials", rows))
    em = s.get("expected_max")
    if em:
        rows = [["trials", "expected best", "95% bootstrap band"]]
        for k, (v, lo, hi) in enumerate(zip(em["values"], em["band_low"], em["band_high"]), 1):
            rows.append([str(k), _fmt(v), f"[{_fmt(lo)}, {_fmt(hi)}]"])
        parts.append(("Expected best score by number of trials", rows))
    rows = [["trial", "search score", "confirmed mean", "95% CI", "n", "winner's curse",
             s["test_metric"] + " (95% CI)", "repeat run"]]  # fmt: skip
    for c in s["confirmed"]:
        d, t = c["confirmed"], c["test"]
        rows.append([str(c["trial"]), _fmt(c["search_value"]), _fmt(d.get("mean")),
                     f"[{_fmt(d.get('ci95_low'))}, {_fmt(d.get('ci95_high'))}]",
                     str(d.get("n", 0)), _fmt(c["gap"]),
                     f"{_fmt(t.get('mean'))} [{_fmt(t.get('ci95_low'))}, "
                     f"{_fmt(t.get('ci95_high'))}]", c["repeat_id"]])  # fmt: skip
    parts.append(("Confirmed on fresh seeds", rows))
    for m, ranking in (s.get("ranking") or {}).items():
        if not ranking:
            continue
        rows = [["rank", "config", "n", "mean", "95% CI", "Holm p vs top", "tied with top"]]
        for g in ranking["groups"]:
            rows.append([_fmt(g["rank"]), g["config_hash"], str(g["n"]), _fmt(g["mean"]),
                         f"[{_fmt(g['ci95_low'])}, {_fmt(g['ci95_high'])}]",
                         _fmt(g["p_value_vs_top"]), str(g["tied_with_top"])])  # fmt: skip
        parts.append((f"Confirmed ranking on {m}", rows))
    if w:
        parts.append(("Run the winner again", f"`{w['command']}`"))
    return parts


def plot(s: dict[str, Any], out: Path) -> list[str]:
    """The expected-maximum curve with its band, and search score vs confirmed interval."""
    plt = pyplot()
    made = []
    em = s.get("expected_max")
    if em:
        fig, ax = plt.subplots(figsize=(6, 4))
        k = range(1, len(em["values"]) + 1)
        ax.fill_between(k, em["band_low"], em["band_high"], alpha=0.25, label="95% bootstrap")
        ax.plot(k, em["values"], marker="o", label="expected best (unbiased)")
        ax.set(xlabel="trials", ylabel=s["metric"], title="Expected best score by search budget")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / PLOTS[0], dpi=100)
        plt.close(fig)
        made.append(PLOTS[0])
    if s["confirmed"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, c in enumerate(s["confirmed"]):
            d = c["confirmed"]
            ax.scatter([i], [c["search_value"]], marker="x", color="C3",
                       label="search score" if i == 0 else None)  # fmt: skip
            if d.get("n", 0) >= 2:
                ax.errorbar([i + 0.1], [d["mean"]], yerr=[[d["mean"] - d["ci95_low"]],
                            [d["ci95_high"] - d["mean"]]], fmt="o", color="k", capsize=5,
                            label="fresh seeds: mean, 95% CI" if i == 0 else None)  # fmt: skip
        ax.set_xticks(range(len(s["confirmed"])), [f"trial {c['trial']}" for c in s["confirmed"]])
        ax.set(ylabel=s["metric"], title="Search score vs confirmed on fresh seeds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / PLOTS[1], dpi=100)
        plt.close(fig)
        made.append(PLOTS[1])
    return made


def note(s: dict[str, Any]) -> str:
    """The study's MLflow description (markdown)."""
    w = s.get("winner")
    if not w:
        return f"No configuration was confirmed ({len(s['trials'])} trials).\n"
    c = w["confirmed"]
    return (f"**Winner: trial {w['trial']}** `{' '.join(w['overrides'])}`\n\n"
            f"- {s['metric']} on fresh seeds: {_fmt(c.get('mean'))}, 95% CI "
            f"[{_fmt(c.get('ci95_low'))}, {_fmt(c.get('ci95_high'))}], n = {c.get('n', 0)}\n"
            f"- in the search: {_fmt(w['search_value'])}; winner's curse "
            f"{_fmt(s.get('search_winner_gap'))}\n- run it again: `{w['command']}`\n")  # fmt: skip


def record(tracker: Any, s: dict[str, Any], workspace: Workspace) -> Path:
    """Write the report next to the study's logs and log it to the study run (`report/`)."""

    out = workspace.run_dir(tracker.run_id) / "report"
    out.mkdir(parents=True, exist_ok=True)
    images = plot(s, out)
    title = f"{s['project']} search: {s['metric']}"
    parts = sections(s)
    (out / "summary.json").write_text(json.dumps(s, indent=2, default=str) + "\n")
    (out / "report.md").write_text(render_markdown(parts, title, images))
    (out / "report.html").write_text(
        render_html(parts, title, {n: (out / n).read_bytes() for n in images})
    )
    tracker.log_artifacts(out, "report")
    tags = {"mlflow.note.content": note(s)}
    if s.get("winner"):
        tags["xp.winner"] = s["winner"]["repeat_id"]
    tracker.set_tags(tags)
    if s.get("search_winner_gap") is not None:
        tracker.log_metrics({"search/winners_curse": s["search_winner_gap"]}, 0)
    return out
