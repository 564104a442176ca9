"""The reliability report of a repeat: Markdown, self-contained HTML, summary.json and PNG plots.

Built from a summary (`xp.summary.summarize`) and the seeds' metric histories only, so
`xp report <repeat run id>` rebuilds it from the tracking store alone.
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
from pathlib import Path
from typing import Any

from xp import stats
from xp.diagnose import diagnosis

PLOTS = ("learning_curves.png", "final_metric.png", "baseline.png")


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _p(x: float | None) -> str:
    return "n/a" if x is None else (f"{x:.2e}" if x < 1e-3 else f"{x:.4f}")


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display on a training machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(histories: dict[int, dict[str, list]], val_key: str, out: Path) -> None:
    """Validation metric and training loss of every seed on one chart."""
    plt = pyplot()

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.4))  # (fits an 880-pixel page)
    sample_key = "train_sample/" + val_key.rsplit("/", 1)[-1]
    for i, (seed, hist) in enumerate(sorted(histories.items())):
        color = f"C{i % 10}"
        name = seed if isinstance(seed, str) else f"seed {seed}"  # (folds: `fold 0 seed 1`)
        if hist.get(val_key):
            ax1.plot(*zip(*hist[val_key]), marker=".", color=color, label=name)
        if hist.get(sample_key):  # the training sample, measured alike: the gap is overfitting
            ax1.plot(*zip(*hist[sample_key]), linestyle=":", color=color, alpha=0.8)
        if hist.get("train/loss"):
            ax2.plot(*zip(*hist["train/loss"]), alpha=0.7, color=color, label=name)
    shown = any(h.get(sample_key) for h in histories.values())
    ax1.set(title=f"{val_key}{' (dotted: training sample)' if shown else ''}", xlabel="step")
    ax2.set(title="train/loss", xlabel="step", yscale="log")
    if len(histories) <= 12:  # (25 folds x seeds: the colours say enough)
        ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_final_metric(summary: dict[str, Any], out: Path) -> None:
    """The metric of each seed as a strip, with the mean and its 95% t interval."""
    plt = pyplot()

    metric = summary["metric"]
    fig, ax = plt.subplots(figsize=(6, 4))
    _strip(ax, 0, summary, metric, "this config")
    ax.set(ylabel=metric, xticks=[0], xticklabels=["this config"], xlim=(-0.8, 0.8))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _strip(ax: Any, x: float, summary: dict[str, Any], metric: str, label: str) -> None:
    import numpy as np

    ok = [(r["seed"], r["metrics"].get(metric)) for r in summary["per_seed"]]
    good = [v for (s, v), r in zip(ok, summary["per_seed"]) if v is not None and r["outcome"] in
            ("ok", "early_stopped")]  # fmt: skip
    bad = [v for (s, v), r in zip(ok, summary["per_seed"]) if v is not None and r["outcome"] not in
           ("ok", "early_stopped")]  # fmt: skip
    jitter = np.linspace(-0.15, 0.15, max(len(good), 1))
    ax.scatter(x + jitter[: len(good)], good, color="C0", zorder=3, label="seeds")
    if bad:
        ax.scatter([x] * len(bad), bad, color="C3", marker="x", zorder=3, label="failed seeds")
    s = summary["stats"].get(metric, {}).get("successful", {})
    if s.get("n", 0) >= 2 and s.get("ci95_low") is not None:
        ax.errorbar([x + 0.3], [s["mean"]], yerr=[[s["mean"] - s["ci95_low"]],
                    [s["ci95_high"] - s["mean"]]], fmt="D", color="k", capsize=6,
                    label=f"{label}: mean, 95% CI")  # fmt: skip


def plot_baseline(summary: dict[str, Any], out: Path) -> None:
    """This configuration's seeds next to the baseline's, each with mean and 95% CI."""
    plt = pyplot()
    import numpy as np

    from xp import stats

    metric, base = summary["metric"], summary["baseline"]
    fig, ax = plt.subplots(figsize=(6, 4))
    _strip(ax, 0, summary, metric, "this config")
    values = base["values"]
    if base["kind"] == "value":
        ax.axhline(values[0], color="C1", linestyle="--", label=f"baseline {values[0]:.4f}")
    else:
        jitter = np.linspace(-0.15, 0.15, len(values))
        ax.scatter(1 + jitter, values, color="C1", zorder=3, label="baseline seeds")
        low, high = stats.t_interval(values)
        mean = float(np.mean(values))
        ax.errorbar([1.3], [mean], yerr=[[mean - low], [high - mean]], fmt="D", color="C1",
                    capsize=6, label="baseline: mean, 95% CI")  # fmt: skip
    ax.set(ylabel=metric, xticks=[0, 1], xticklabels=["this config", "baseline"], xlim=(-0.8, 1.8))
    ax.set_title(f"verdict: {summary.get('verdict')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _sections(summary: dict[str, Any], title: str) -> list[tuple[str, list[list[str]] | str]]:
    """The report's content as (heading, table rows or paragraph), shared by Markdown and HTML."""
    metric = summary["metric"]
    n_seeds, failed = len(summary["seeds"]), summary["failed_seeds"]
    s = summary["stats"].get(metric, {}).get("successful", {})
    lines: list[tuple[str, list[list[str]] | str]] = []
    head = (
        f"{title}: {n_seeds} seeds ({', '.join(map(str, summary['seeds']))}), "
        f"{len(failed)} failed{' (' + ', '.join(map(str, failed)) + ')' if failed else ''}. "
        f"{metric} = {_fmt(s.get('mean'))} +- {_fmt(s.get('std'))} (mean +- std over "
        f"{s.get('n', 0)} successful seeds), 95% t interval [{_fmt(s.get('ci95_low'))}, "
        f"{_fmt(s.get('ci95_high'))}]."
    )
    if summary.get("verdict"):
        head += f" Verdict against the baseline: **{summary['verdict']}**."
    for warning in summary.get("seed_check") or []:
        head += f" Warning: {warning}."
    lines.append(("Summary", head))
    rows = [["metric", "seeds", "mean", "std", "95% CI", "median", "IQM", "min", "max"]]
    for key, both in summary["stats"].items():
        for which in ("successful", "all"):
            d = both[which]
            if d.get("n", 0) == 0 or (which == "all" and not failed):
                continue
            rows.append([key, f"{d['n']} {which}", _fmt(d.get("mean")), _fmt(d.get("std")),
                         f"[{_fmt(d.get('ci95_low'))}, {_fmt(d.get('ci95_high'))}]",
                         _fmt(d.get("median")), _fmt(d.get("iqm")), _fmt(d.get("min")),
                         _fmt(d.get("max"))])  # fmt: skip
    lines.append(("Statistics over seeds", rows))
    seeds = [["seed", "run", "outcome", metric, "overfitting", "gap at best", "monitor events"]]
    for r in summary["per_seed"]:
        d, m = r.get("diagnosis") or {}, r["metrics"]
        events = [f"{k} {int(v)}" for k, v in m.items() if k.startswith("monitor/") and v]
        counted = any(k.startswith("monitor/") for k in m)
        which = str(r["seed"]) if r.get("fold") is None else f"{r['seed']} (fold {r['fold']})"
        seeds.append([which, str(r["run_id"]), r["outcome"], _fmt(m.get(metric)),
                      d.get("text", "-"), _fmt(d.get("gap_at_best")),
                      ", ".join(e.removeprefix("monitor/") for e in events)
                      or ("none" if counted else "-")])  # fmt: skip
    lines.append(("Seeds", seeds))
    found = diagnosis.sentences(summary)
    if found:
        lines.append(("Diagnosis", " ".join(f"{s[0].upper()}{s[1:]}." for s in found)))
    lines += _error_sections((summary.get("diagnosis") or {}).get("errors") or {})
    boot = summary.get("bootstrap")
    if boot:
        note = f" {boot['note']}" if boot.get("note") else ""
        lines.append(("Bootstrap", f"BCa bootstrap 95% interval of the mean: [{_fmt(boot['low'])}, "
                      f"{_fmt(boot['high'])}].{note}"))  # fmt: skip
    lines += _folds_sections(summary.get("folds"))
    cmp = summary.get("comparison")
    if cmp:
        base = summary["baseline"]
        what = _baseline_label(base)
        mw = cmp.get("mann_whitney", {})
        rows = [
            ["quantity", "value"],
            ["baseline", what],
            ["improvement (mean difference, positive = better)", _fmt(cmp["diff"])],
            [f"95% CI of the improvement ({stats.test_of(cmp)[0].removeprefix('one-sided ')})",
             f"[{_fmt(cmp['diff_ci95_low'])}, {_fmt(cmp['diff_ci95_high'])}]"],
            [f"{stats.test_of(cmp)[0]} test p", _p(stats.test_of(cmp)[1])],
            ["one-sided Mann-Whitney U p", _p(mw.get("p_value"))],
            ["smallest p a rank test can reach with these seeds", _p(mw.get("min_p"))],
            ["P(a seed beats a baseline seed)", _fmt(cmp.get("prob_improvement"))],
            ["seeds per arm a power analysis asks for (80% power)", _fmt(cmp.get("seeds_needed"))],
            ["verdict", str(summary["verdict"])],
        ]  # fmt: skip
        lines.append(("Against the baseline", rows))
    lines.append(("How to read this", READING))
    return lines


def _folds_sections(folds: dict[str, Any] | None) -> Sections:
    """A folds repeat's: each split's mean over its seeds, and the variance decomposition."""
    if not folds:
        return []
    rows = [["split", "mean over seeds", "rows md5"]]
    for split, mean in folds["by_split"].items():
        rows.append([str(split), _fmt(mean), str(folds["split_md5"].get(split, ""))[:12]])
    out: Sections = [(f"Splits ({folds['kind']}, {folds['count']})", rows)]
    vc = folds.get("variance") or {}
    if vc.get("variance"):
        table = [["source", "variance", "share"]]
        for name in ("seed", "split", "residual"):
            table.append([name, _fmt(vc["variance"][name]), f"{vc['share'][name]:.0%}"])
        table.append(["what it means", vc["advice"], ""])
        out.append(("Where the variance comes from (random-effects model, REML)", table))
    elif vc.get("error"):
        out.append(("Where the variance comes from", vc["error"]))
    return out


READING = (
    "Seeds are the unit of replication: each is a full training run with its own weight init, "
    "data order and dropout. The interval is Student's t over seeds (bootstrap intervals "
    "under-cover below about 10 seeds and are shown only as a cross-check). The verdict is "
    "`holds` when a one-sided Welch t-test gives p < alpha and the (1 - 2 alpha) interval of the "
    "improvement lies above the minimum effect; `does_not_hold` when the baseline is "
    "significantly better or the interval lies below the minimum effect; `inconclusive` "
    "otherwise, with the seeds a power analysis says would settle it. A rank test cannot reach "
    "p < 0.05 with 3 seeds against 3. Failed seeds (NaN, or no better than the trivial baseline) "
    "are listed and left out of the main statistics; the `all` rows include them."
)


def _error_sections(view: dict[str, Any]) -> Sections:
    """The examples every seed got wrong and those only some did, with their inputs (a text; an
    image is drawn in `hard_examples.png` / `seed_lottery.png`)."""
    if not view:
        return []
    names, shown = view.get("labels") or [], view.get("examples", {})

    def name(i: Any) -> str:
        return names[i] if isinstance(i, int) and i < len(names) else str(i)

    def row(index: int, extra: list[str]) -> list[str]:
        ex = shown.get(str(index), {})
        text = ex.get("input") if isinstance(ex.get("input"), str) else "(image)"
        return [str(index), name(ex.get("label")), name(ex.get("predicted")), *extra, text]

    out: Sections = []
    always = [["test example", "label", "predicted (a seed)", "input"]]
    always += [row(i, []) for i in view["always_wrong"] if str(i) in shown]
    if len(always) > 1:
        out.append(("Every seed gets these wrong (hard or mislabelled)", always))
    some = [["test example", "label", "predicted (a seed)", "seeds wrong", "input"]]
    some += [row(d["index"], [f"{d['n_wrong']} of {view['n_seeds']}"])
             for d in view["sometimes_wrong"] if str(d["index"]) in shown]  # fmt: skip
    if len(some) > 1:
        out.append(("Only some seeds get these wrong (the seed lottery)", some))
    return out


def plot_error_examples(view: dict[str, Any], out_dir: Path) -> list[str]:
    """The hard and the lottery examples that are images, drawn; the files written."""
    from xp.diagnose import errors

    shown, names, made = view.get("examples", {}), view.get("labels") or [], []
    groups = {"hard_examples.png": (view.get("always_wrong", []), "every seed gets these wrong"),
              "seed_lottery.png": ([d["index"] for d in view.get("sometimes_wrong", [])],
                                   "only some seeds get these wrong")}  # fmt: skip
    for file, (indices, title) in groups.items():
        images = [(i, shown[str(i)]) for i in indices if isinstance(
            shown.get(str(i), {}).get("input"), list)]  # fmt: skip
        if images:

            def name(k: int) -> str:
                return names[k] if k < len(names) else str(k)

            captions = [f"#{i} {name(e['label'])}->{name(e['predicted'])}" for i, e in images]
            errors.plot_images([e["input"] for _, e in images], captions, out_dir / file, title)
            made.append(file)
    return made


def _baseline_label(base: dict[str, Any], quote: str = "") -> str:
    if base["kind"] == "run":
        return f"run {quote}{base['id']}{quote}"
    return f"the fixed value {base['values'][0]}"


def note(summary: dict[str, Any]) -> str:
    """A repeat's MLflow description (`mlflow.note.content`, markdown in the UI): the summary."""
    metric, seeds, failed = summary["metric"], summary["seeds"], summary["failed_seeds"]
    s = summary["stats"].get(metric, {}).get("successful", {})
    lines = [
        f"**{metric} = {_fmt(s.get('mean'))}**, 95% CI [{_fmt(s.get('ci95_low'))}, "
        f"{_fmt(s.get('ci95_high'))}], n = {s.get('n', 0)} of {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))})",
        "",
        f"- failed seeds: {', '.join(map(str, failed)) if failed else 'none'}",
        *(f"- warning: {w}" for w in summary.get("seed_check") or []),
        *(f"- {line}" for line in diagnosis.sentences(summary)),
    ]
    base, cmp = summary.get("baseline"), summary.get("comparison")
    if base is None:
        lines.append("- verdict: none (no `--baseline` given)")
    else:
        what = _baseline_label(base, "`")
        lines.append(f"- baseline: {what}, mean {_fmt(statistics.fmean(base['values']))}")
        if cmp:
            test, p = stats.test_of(cmp)
            lines.append(
                f"- verdict: **{summary['verdict']}**: improvement {_fmt(cmp['diff'])}, 95% CI "
                f"[{_fmt(cmp['diff_ci95_low'])}, {_fmt(cmp['diff_ci95_high'])}], {test} "
                f"p = {_p(p)}"
            )
        else:
            why = summary.get("no_verdict") or "fewer than 2 successful seeds"
            lines.append(f"- verdict: none ({why})")
    vc = (summary.get("folds") or {}).get("variance") or {}
    if vc.get("advice") or vc.get("error"):
        lines.append(f"- variance over {vc.get('splits')} splits x {vc.get('seeds')} seeds: "
                     f"{vc.get('advice') or vc['error']}")  # fmt: skip
    lines.append("- full report: artifacts `report/report.html`, `report/report.md`")
    return "\n".join(lines) + "\n"


Sections = list[tuple[str, list[list[str]] | str]]


def to_markdown(summary: dict[str, Any], title: str, images: list[str]) -> str:
    """The report as Markdown (images referenced next to it)."""
    return render_markdown(_sections(summary, title), title, images)


def to_html(summary: dict[str, Any], title: str, images: dict[str, bytes]) -> str:
    """The report as one self-contained HTML file (plots embedded as base64 PNG)."""
    return render_html(_sections(summary, title), title, images)


def render_markdown(sections: Sections, title: str, images: list[str]) -> str:
    """(heading, paragraph or table rows) sections as Markdown, images referenced."""
    out = [f"# {title}\n"]
    for heading, body in sections:
        out.append(f"## {heading}\n")
        if isinstance(body, str):
            out.append(body + "\n")
        else:
            out.append("| " + " | ".join(body[0]) + " |")
            out.append("|" + "---|" * len(body[0]))
            out.extend("| " + " | ".join(row) + " |" for row in body[1:])
            out.append("")
    out.extend(f"![{name}]({name})\n" for name in images)
    return "\n".join(out)


def render_html(sections: Sections, title: str, images: dict[str, bytes]) -> str:
    """Sections as one self-contained HTML file (plots embedded as base64 PNG)."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}"
             "img{max-width:100%;height:auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style>",
             f"<h1>{html.escape(title)}</h1>"]  # fmt: skip
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, str):
            text = html.escape(body).replace("**", "")
            parts.append(f"<p>{text}</p>")
        else:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in body[0]))
            for row in body[1:]:
                parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row))
            parts.append("</table>")
    for name, data in images.items():
        b64 = base64.b64encode(data).decode()
        parts.append(f"<h3>{name}</h3><img alt='{name}' src='data:image/png;base64,{b64}'>")
    return "\n".join(parts)


def write_report(
    summary: dict[str, Any], histories: dict[int, dict[str, list]], out_dir: Path, title: str
) -> list[Path]:
    """Write report.md, report.html, summary.json and the plots into `out_dir`.

    Returns:
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = summary["metric"]
    val_key = f"val/{metric.rsplit('/', 1)[-1]}"
    plot_learning_curves(histories, val_key, out_dir / PLOTS[0])
    plot_final_metric(summary, out_dir / PLOTS[1])
    images = list(PLOTS[:2])
    if summary.get("comparison"):
        plot_baseline(summary, out_dir / PLOTS[2])
        images.append(PLOTS[2])
    images += plot_error_examples((summary.get("diagnosis") or {}).get("errors") or {}, out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "report.md").write_text(to_markdown(summary, title, images))
    blobs = {name: (out_dir / name).read_bytes() for name in images}
    (out_dir / "report.html").write_text(to_html(summary, title, blobs))
    return [out_dir / n for n in ("report.md", "report.html", "summary.json", *images)]


def terminal_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Rows for the CLI's table: one per reported metric (successful seeds)."""
    rows = []
    for key, both in summary["stats"].items():
        d = both["successful"]
        if d.get("n", 0):
            rows.append([key, str(d["n"]), _fmt(d.get("mean")), _fmt(d.get("std")),
                         f"[{_fmt(d.get('ci95_low'))}, {_fmt(d.get('ci95_high'))}]"])  # fmt: skip
    return rows
