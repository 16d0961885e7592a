"""Results of federated runs: ``results.json`` per run and one markdown table across runs.

A run's results hold the scores of the pre-trained and the final global model on every
evaluation set, the client cost measured over all updates (:class:`CostLedger.summary`), the
cost the plan predicts per client, and the wall time. :func:`comparison_table` puts several runs
(e.g. no dropout, uniform and targeted dropout at matched cost) side by side.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import List, Optional, Sequence

MB = 1e6


def write_results(out_dir: Path, setup, info, ledger, history) -> dict:
    """Write ``results.json`` and ``results.md`` of a finished run; returns the results dict."""
    rounds = [r for r in history.rows if r["round"] >= 1]
    final_round = max((r["round"] for r in rounds), default=0)
    final_scores = next((r["scores"] for r in rounds if r["round"] == final_round), {})
    results = {
        "run": Path(out_dir).name,
        "plan": setup.plan.name,
        "plan_note": setup.plan.note,
        "rounds": final_round,
        "clients_per_round": setup.clients_per_round,
        "local": {"epochs": setup.local.epochs, "steps": setup.local.steps, "optim": setup.local.optim,
                  "lr": setup.local.lr, "batch_size": setup.local.batch_size},
        "server_lr": setup.server_lr,
        "seed": setup.seed,
        "params_full": info.num_params,
        "planned_cost_per_client": setup.plan.cost(info),
        "cost": ledger.summary(),
        "wall_seconds": sum(r["seconds"] for r in rounds),
        "round_seconds": (sum(r["seconds"] for r in rounds) / len(rounds)) if rounds else math.nan,
        "eval_seconds": sum(r.get("eval_seconds", 0.0) for r in history.rows),
        "scores": {"pretrained": (history.row(0) or {}).get("scores", {}), "final": final_scores},
        "history": [{"round": r["round"], "loss": r.get("loss"), "failures": r.get("failures", 0),
                     "scores": r.get("scores", {})} for r in history.rows],
    }
    path = Path(out_dir) / "results.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    (Path(out_dir) / "results.md").write_text(comparison_table([results]), encoding="utf-8")
    return results


def load_results(run_dir: Path) -> dict:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run in {run_dir} has not finished")
    return json.loads(path.read_text(encoding="utf-8"))


def _fmt(v, digits=2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def comparison_table(runs: Sequence[dict]) -> str:
    """Markdown table: the pre-trained model, then one row per run.

    Columns: client parameters trained (fraction of the full model), MB sent to / from each
    client per update, total MB moved, client step time (ms), client peak RSS (MB), mean round
    time (s), failed updates, then WER and CER per evaluation set.
    """
    if not runs:
        return ""
    sets: List[str] = []
    for r in runs:
        for name in list(r["scores"]["pretrained"]) + list(r["scores"]["final"]):
            if name not in sets:
                sets.append(name)
    head = ["model", "plan", "rounds", "client params", "MB down/update", "MB up/update",
            "MB total", "step ms", "peak RSS MB", "round s", "failed"]
    head += [f"{s} {m}" for s in sets for m in ("WER", "CER")]
    lines = ["|" + "|".join(head) + "|", "|" + "|".join("---" for _ in head) + "|"]
    pre = runs[0]["scores"]["pretrained"]
    lines.append("|" + "|".join(["pre-trained", "-", "0", "-", "-", "-", "-", "-", "-", "-", "-"]
                               + [_fmt(pre.get(s, {}).get(m)) for s in sets for m in ("WER", "CER")]) + "|")
    for r in runs:
        c = r["cost"]
        n = max(c["updates"], 1)
        cells = [
            r.get("label", r["run"]), r["plan"], str(r["rounds"]),
            f"{int(c['params_trained'])} ({_fmt(c['params_fraction'], 3)})",
            _fmt(c["bytes_down"] / (n + c["failures"]) / MB, 3), _fmt(c["bytes_up"] / n / MB, 3),
            _fmt((c["bytes_down"] + c["bytes_up"]) / MB, 2),
            _fmt(1000 * c["step_seconds"], 1), _fmt(c["peak_rss_bytes"] / MB, 0),
            _fmt(r["round_seconds"], 2), str(c["failures"]),
        ]
        final = r["scores"]["final"]
        cells += [_fmt(final.get(s, {}).get(m)) for s in sets for m in ("WER", "CER")]
        lines.append("|" + "|".join(cells) + "|")
    notes = [f"- {r.get('label', r['run'])}: {r['plan_note']}" for r in runs if r.get("plan_note")]
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def load_labelled(run_dirs: Sequence[Path]) -> List[dict]:
    """Results of finished runs, each labelled by its directory name, or ``<parent>/<name>``
    when two runs share a name (e.g. ``r0.25/uniform`` and ``r0.5/uniform``)."""
    runs = [load_results(d) for d in run_dirs]
    names = [Path(d).name for d in run_dirs]
    for d, r in zip(run_dirs, runs):
        d = Path(d)
        r["label"] = f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name
    return runs


def write_comparison(run_dirs: Sequence[Path], out: Path, plot: Optional[Path] = None) -> str:
    """Combine finished runs into one markdown table written to `out`.

    Args:
        run_dirs: Finished run directories (each with ``results.json``).
        out: Markdown file to write.
        plot: Optional PNG: error rate vs client model size
            (:func:`espnet_ext.federated.plots.plot_error_vs_client_size`), linked from `out`.

    Returns:
        The markdown written.
    """
    runs = load_labelled(run_dirs)
    table = comparison_table(runs)
    if plot is not None:
        from espnet_ext.federated.plots import plot_error_vs_client_size

        plot_error_vs_client_size(runs, plot)
        table += f"\n![CER vs client model size]({os.path.relpath(plot, Path(out).parent)})\n"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(table, encoding="utf-8")
    return table
