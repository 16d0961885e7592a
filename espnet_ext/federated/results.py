"""Results of federated runs: ``results.json`` per run and one markdown table across runs.

A run's results hold the scores of the pre-trained and the final global model on every
evaluation set, the client cost measured over all updates (:class:`CostLedger.summary`), the
cost the plan predicts per client, the wall time, and how many rounds had at least one client
update (``rounds_with_updates``; 0 means the final model is the pre-trained one).
:func:`comparison_table` puts several runs (e.g. no dropout, uniform and targeted dropout at
matched cost) side by side.

Several seeds: a plan directory with ``seed<N>/`` run directories is one row of the table, with
the mean, sample standard deviation and min-max of each error rate over its seeds
(:func:`aggregate`). :func:`paired_differences` adds targeted minus uniform and minus frozen
(same rate directory) and targeted minus no dropout as paired bootstrap intervals over the test
utterances (:mod:`espnet_ext.federated.bootstrap`), from each run's ``per_utt.tsv``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from espnet_ext.reporting.federated_figures import ClientSizeRow
from espnet_ext.reporting.tables import fixed, markdown_table, signed
from espnet_ext.utils.atomic import write_json_atomic, write_text_atomic

MB = 1e6
SEED_DIR = re.compile(r"^seed(\d+)$")
METRICS = ("WER", "CER")
# Per-utterance counts (words, characters) of each metric: indices into a per_utt.tsv row.
_COUNT_INDEX = {"WER": (0, 1), "CER": (2, 3)}


class ResultsError(ValueError):
    """Finished runs that cannot be combined as asked (e.g. two runs of one row with one seed)."""


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
                  "lr": setup.local.lr, "batch_size": setup.local.batch_size,
                  "cpu_autocast": setup.local.cpu_autocast, "cpu_dropout": setup.local.cpu_dropout,
                  "cpu_channels_last": setup.local.cpu_channels_last},
        "server_lr": setup.server_lr,
        "seed": setup.seed,
        "params_full": info.num_params,
        "planned_cost_per_client": setup.plan.cost(info),
        "cost": ledger.summary(),
        "wall_seconds": sum(r["seconds"] for r in rounds),
        "round_seconds": (sum(r["seconds"] for r in rounds) / len(rounds)) if rounds else math.nan,
        "eval_seconds": sum(r.get("eval_seconds", 0.0) for r in history.rows),
        "rounds_with_updates": sum(1 for r in rounds if r.get("clients", 0) > 0),
        "scores": {"pretrained": (history.row(0) or {}).get("scores", {}), "final": final_scores},
        "history": [{"round": r["round"], "loss": r.get("loss"), "clients": r.get("clients", 0),
                     "failures": r.get("failures", 0), "scores": r.get("scores", {})}
                    for r in history.rows],
    }
    write_json_atomic(Path(out_dir) / "results.json", results, indent=2, sort_keys=True)
    (Path(out_dir) / "results.md").write_text(comparison_table([results]), encoding="utf-8")
    return results


def rounds_with_updates(results: dict) -> Optional[int]:
    """Rounds in which at least one client update was merged, or None for results written before
    this was recorded."""
    return results.get("rounds_with_updates")


def load_results(run_dir: Path) -> dict:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run in {run_dir} has not finished")
    results = json.loads(path.read_text(encoding="utf-8"))
    results["run_dir"] = str(run_dir)
    return results


def seed_run_dirs(plan_dir: Path) -> List[Path]:
    """The ``seed<N>/`` run directories of a plan directory, by seed (empty if none)."""
    plan_dir = Path(plan_dir)
    if not plan_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in plan_dir.iterdir() if p.is_dir() and (m := SEED_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def load_group(entry: Union[Path, Sequence[Path]]) -> List[dict]:
    """Results of the runs of one table row.

    Args:
        entry: A run directory (with ``results.json``); a plan directory with ``seed<N>/`` run
            directories (all of them, each must have finished; a ``results.json`` of an older
            single-seed run in the plan directory itself is then not used); or an explicit list
            of run directories (the seeds of one plan).

    Raises:
        FileNotFoundError: A run that has not finished, or a directory with neither.
        ResultsError: Two runs of one row with the same seed.
    """
    if isinstance(entry, (str, Path)):
        entry = Path(entry)
        seeds = seed_run_dirs(entry)
        dirs = seeds if seeds else [entry]
    else:
        dirs = [Path(d) for d in entry]
    runs = [load_results(d) for d in dirs]
    seen: Dict[int, str] = {}
    for r in runs:
        if r.get("seed") in seen:
            raise ResultsError(f"{r['run_dir']} and {seen[r['seed']]} are both seed {r['seed']}: "
                             "one run per seed in a row")
        seen[r.get("seed")] = r["run_dir"]
    return runs


def _fmt(v: Optional[float], digits: int = 2) -> str:
    """A number for results.md (`digits` decimals); ``-`` for None/NaN."""
    return fixed(v, digits, missing="-")


def _signed(v: Optional[float], digits: int = 2) -> str:
    """A difference for results.md (sign, `digits` decimals); ``-`` for None/NaN."""
    return signed(v, digits, missing="-")


def aggregate(runs: Sequence[dict]) -> dict:
    """Mean and spread over the seeds of one plan.

    Args:
        runs: Results dicts of the same plan, one per seed.

    Returns:
        ``seeds`` (list), ``n``, ``final`` {set: {metric: {"mean", "std", "min", "max"}}} in
        percent (``std`` is the sample standard deviation, ddof 1; NaN for one seed; a set
        missing from some run uses the runs that have it), ``cost`` (each field's mean over the
        seeds), ``rounds`` (list), ``rounds_with_updates`` (list; None entries for older
        results), ``failures`` (sum), and the first run's ``plan``, ``plan_note``,
        ``round_seconds`` mean.
    """
    if not runs:
        raise ValueError("no runs to aggregate")
    sets: List[str] = []
    for r in runs:
        sets += [s for s in r["scores"]["final"] if s not in sets]
    final = {}
    for s in sets:
        final[s] = {}
        for m in METRICS:
            v = np.array([r["scores"]["final"][s][m] for r in runs if s in r["scores"]["final"]], dtype=float)
            final[s][m] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                           "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}
    cost = {k: float(np.mean([r["cost"][k] for r in runs])) for k in runs[0]["cost"]}
    return {
        "seeds": [r.get("seed") for r in runs], "n": len(runs), "final": final, "cost": cost,
        "rounds": [r["rounds"] for r in runs],
        "rounds_with_updates": [rounds_with_updates(r) for r in runs],
        "failures": int(sum(r["cost"]["failures"] for r in runs)),
        "plan": runs[0]["plan"], "plan_note": runs[0].get("plan_note", ""),
        "round_seconds": float(np.mean([r["round_seconds"] for r in runs])),
    }


def _score_cell(stats: Optional[dict]) -> str:
    """``mean`` for one seed; ``mean ± std (min-max)`` for several."""
    if stats is None:
        return "-"
    if stats["n"] <= 1:
        return _fmt(stats["mean"])
    return f"{_fmt(stats['mean'])} ± {_fmt(stats['std'])} ({_fmt(stats['min'])}-{_fmt(stats['max'])})"


def _range(values: Sequence) -> str:
    values = sorted(set(values))
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def comparison_table(runs: Sequence[Union[dict, Sequence[dict]]],
                     differences: Sequence["PairedRow"] = (), notes: Sequence[str] = ()) -> str:
    """Markdown table: the pre-trained model, then one row per run or per plan over seeds.

    Columns: client parameters trained (fraction of the full model), MB sent to / from each
    client per update, total MB moved, client step time (ms), client peak RSS (MB), mean round
    time (s), failed updates, seeds, then WER and CER per evaluation set: the value for one run,
    ``mean ± std (min-max)`` over the seeds of a row with several. Cost columns are means over
    the seeds. Then one line per run with its plan note, a warning for runs in which rounds had
    no client update, and the paired differences (:func:`differences_table`).

    Args:
        runs: Results dicts (one run each) or lists of results dicts (the seeds of one plan),
            each optionally with a ``label`` key (else its ``run`` name).
        differences: Paired differences to list below the table.
        notes: Further lines to add at the end (e.g. why a difference is missing).
    """
    if not runs:
        return ""
    groups = [list(r) if isinstance(r, (list, tuple)) else [r] for r in runs]
    aggs = [aggregate(g) for g in groups]
    labels = [g[0].get("label", g[0]["run"]) for g in groups]
    sets: List[str] = []
    for g in groups:
        for r in g:
            for name in list(r["scores"]["pretrained"]) + list(r["scores"]["final"]):
                if name not in sets:
                    sets.append(name)
    head = ["model", "plan", "rounds", "client params", "MB down/update", "MB up/update",
            "MB total", "step ms", "peak RSS MB", "round s", "failed", "seeds"]
    head += [f"{s} {m}" for s in sets for m in METRICS]
    pre = groups[0][0]["scores"]["pretrained"]
    table = [["pre-trained", "-", "0", "-", "-", "-", "-", "-", "-", "-", "-", "-"]
             + [_fmt(pre.get(s, {}).get(m)) for s in sets for m in METRICS]]
    for label, agg in zip(labels, aggs):
        c = agg["cost"]
        n = max(c["updates"], 1)
        cells = [
            label, agg["plan"], _range(agg["rounds"]),
            f"{int(round(c['params_trained']))} ({_fmt(c['params_fraction'], 3)})",
            _fmt(c["bytes_down"] / (n + c["failures"]) / MB, 3), _fmt(c["bytes_up"] / n / MB, 3),
            _fmt((c["bytes_down"] + c["bytes_up"]) / MB, 2),
            _fmt(1000 * c["step_seconds"], 1), _fmt(c["peak_rss_bytes"] / MB, 0),
            _fmt(agg["round_seconds"], 2), str(agg["failures"]),
            ",".join(str(s) for s in agg["seeds"]),
        ]
        cells += [_score_cell(agg["final"].get(s, {}).get(m)) for s in sets for m in METRICS]
        table.append(cells)
    lines = markdown_table(head, table, padded=False)
    if any(a["n"] > 1 for a in aggs):
        lines.append("\nRows with several seeds: WER and CER as mean ± sample standard deviation (min-max) "
                     "over the seeds; cost columns are means over the seeds.")
    out = ["\n".join(lines) + "\n"]
    warn = []
    for label, g in zip(labels, groups):
        for r in g:
            updated = rounds_with_updates(r)
            if updated is not None and updated < r["rounds"]:
                what = (f"no client update in any of its {r['rounds']} rounds; global model unchanged "
                        "(the final model is the pre-trained one)" if updated == 0 else
                        f"only {updated} of {r['rounds']} rounds had a client update")
                warn.append(f"- **{label}{' seed ' + str(r.get('seed')) if len(g) > 1 else ''}: "
                            f"rounds_with_updates: {updated}**: {what}")
    plan_notes = [f"- {label}: {a['plan_note']}" for label, a in zip(labels, aggs) if a["plan_note"]]
    for block in (warn, plan_notes):
        if block:
            out.append("\n" + "\n".join(block) + "\n")
    if differences:
        out.append("\n" + differences_table(differences))
    if notes:
        out.append("\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    return "".join(out)


@dataclasses.dataclass(frozen=True)
class PairedRow:
    """One paired comparison of two table rows on one evaluation set and metric."""

    a: str
    b: str
    set: str
    metric: str
    result: "object"  # espnet_ext.federated.bootstrap.PairedDifference


def differences_table(rows: Sequence[PairedRow]) -> str:
    """Markdown table of paired differences a - b (percentage points) with their intervals."""
    if not rows:
        return ""
    first = rows[0].result
    lines = [f"Paired differences of the final models (a - b, percentage points; negative: a is better): "
             f"{100 * first.confidence:g}% paired bootstrap interval over the same test utterances "
             f"({first.resamples} resamples, resampling seed {first.seed}), each side's per-utterance errors "
             "averaged over its seeds.\n"]
    lines += markdown_table(
        ["a - b", "set", "metric", "difference", "interval", "utterances", "seeds a/b"],
        [[f"{r.a} - {r.b}", r.set, r.metric, _signed(r.result.difference),
          f"[{_signed(r.result.low)}, {_signed(r.result.high)}]", r.result.utterances,
          f"{r.result.seeds_a}/{r.result.seeds_b}"] for r in rows], padded=False)
    return "\n".join(lines) + "\n"


def _parent_label(group: Sequence[dict]) -> str:
    """The directory holding a row's plan directory (its rate directory, e.g. ``r0.25``)."""
    d = Path(group[0]["run_dir"])
    if SEED_DIR.match(d.name):
        d = d.parent
    return str(d.parent.resolve())


def comparison_pairs(groups: Sequence[Sequence[dict]]) -> List[Tuple[int, int]]:
    """(a, b) row indices to compare: every ``targeted`` row minus the ``uniform`` and ``frozen``
    rows of the same rate directory (matched client cost), and minus the ``none`` row of the same
    directory, or the only ``none`` row when that directory has none (no dropout does not depend
    on the rate)."""
    plan = [g[0]["plan"] for g in groups]
    parent = [_parent_label(g) for g in groups]
    nones = [i for i, p in enumerate(plan) if p == "none"]
    pairs = []
    for i, p in enumerate(plan):
        if p != "targeted":
            continue
        for j, q in enumerate(plan):
            if q in ("uniform", "frozen") and parent[j] == parent[i]:
                pairs.append((i, j))
        local = [j for j in nones if parent[j] == parent[i]]
        ref = local or (nones if len(nones) == 1 else [])
        pairs += [(i, j) for j in ref[:1]]
    return pairs


def _per_utt(run: dict) -> Dict[str, Dict[str, Tuple[int, int, int, int]]]:
    """A run's per-utterance counts, checked against its results.json.

    Raises:
        ValueError: Missing file, or counts that do not give the run's final WER/CER (a stale file).
    """
    from espnet_ext.federated.evaluate import PER_UTT_FILE, read_per_utterance

    path = Path(run["run_dir"]) / PER_UTT_FILE
    if not path.is_file():
        raise ValueError(f"{path} not found (a run finished before per-utterance errors were kept): "
                         "re-run the same fl_simulate command to write it")
    counts = read_per_utterance(path)
    for s, scores in run["scores"]["final"].items():
        for m in METRICS:
            ref_i, err_i = _COUNT_INDEX[m]
            rows = counts.get(s, {}).values()
            ref = sum(r[ref_i] for r in rows)
            rate = 100.0 * sum(r[err_i] for r in rows) / max(ref, 1)
            if not rows or abs(rate - scores[m]) > 0.006:
                raise ValueError(f"{path}: the {s} {m} of its counts ({rate:.2f}) is not the run's final "
                                 f"{m} ({scores[m]:.2f}); re-run the same fl_simulate command to rewrite it")
    return counts


def paired_differences(groups: Sequence[Sequence[dict]], labels: Sequence[str], resamples: int = 2000,
                       seed: int = 0, confidence: float = 0.95) -> Tuple[List[PairedRow], List[str]]:
    """Paired bootstrap intervals of the differences :func:`comparison_pairs` chooses.

    Each pair is scored on every evaluation set both rows have, for CER and WER, with the same
    bootstrap seed (:func:`espnet_ext.federated.bootstrap.paired_bootstrap`; per-utterance errors
    averaged over each row's seeds, see there for why).

    Returns:
        (rows, notes): the differences, and one note per pair that could not be computed (no
        per-utterance errors, runs scored on different utterances, or a run not scored on a set).
    """
    from espnet_ext.federated.bootstrap import paired_bootstrap

    rows: List[PairedRow] = []
    notes: List[str] = []
    for i, j in comparison_pairs(groups):
        try:
            counts = [[_per_utt(r) for r in groups[k]] for k in (i, j)]
        except ValueError as e:
            notes.append(f"{labels[i]} - {labels[j]}: no paired interval: {e}")
            continue
        sets = [s for s in groups[i][0]["scores"]["final"] if s in groups[j][0]["scores"]["final"]]
        for s in sets:
            unscored = [r["run_dir"] for k, side in zip((i, j), counts) for r, c in zip(groups[k], side)
                        if s not in c]
            if unscored:
                notes.append(f"{labels[i]} - {labels[j]}: no paired interval on {s}: the run in {unscored[0]} "
                             f"has no {s} scores (it was not evaluated on {s})")
                continue
            utts = list(counts[0][0][s])
            if any(list(c[s]) != utts for side in counts for c in side):
                notes.append(f"{labels[i]} - {labels[j]}: no paired interval on {s}: the runs were scored "
                             "on different utterances")
                continue
            for m in METRICS:
                ref_i, err_i = _COUNT_INDEX[m]
                ref = [counts[0][0][s][u][ref_i] for u in utts]
                err = [np.array([[c[s][u][err_i] for u in utts] for c in side]) for side in counts]
                rows.append(PairedRow(labels[i], labels[j], s, m,
                                      paired_bootstrap(err[0], err[1], ref, resamples, seed, confidence)))
    return rows, notes


def load_labelled(run_dirs: Sequence[Union[Path, Sequence[Path]]]) -> List[List[dict]]:
    """Results of finished runs, one list per table row (:func:`load_group`), each labelled by its
    (plan) directory name, or ``<parent>/<name>`` when two rows share a name (e.g.
    ``r0.25/uniform`` and ``r0.5/uniform``)."""
    groups = [load_group(d) for d in run_dirs]
    dirs = []
    for entry in run_dirs:
        if isinstance(entry, (str, Path)):
            dirs.append(Path(entry))
        else:
            d = Path(entry[0])
            dirs.append(d.parent if SEED_DIR.match(d.name) else d)
    names = [d.name for d in dirs]
    for d, g in zip(dirs, groups):
        label = f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name
        for r in g:
            r["label"] = label
    return groups


def client_size_rows(groups: Sequence[Sequence[dict]]) -> List[ClientSizeRow]:
    """The numbers of the error-vs-client-size figure, one item per table row.

    Args:
        groups: Results dicts per table row (the seeds of one plan, or one run), each with a
            ``label`` (:func:`load_labelled`) or else its ``run`` name.

    Returns:
        One :class:`ClientSizeRow` per row: its plan, its mean client parameter fraction and its
        final error rates over seeds (:func:`aggregate`).
    """
    rows = []
    for g in groups:
        agg = aggregate(g)
        rows.append(ClientSizeRow(label=g[0].get("label", g[0]["run"]), plan=agg["plan"],
                                  params_fraction=agg["cost"]["params_fraction"], final=agg["final"],
                                  seeds=agg["n"]))
    return rows


def write_comparison(run_dirs: Sequence[Union[Path, Sequence[Path]]], out: Path, plot: Optional[Path] = None,
                     resamples: int = 2000, bootstrap_seed: int = 0) -> str:
    """Combine finished runs into one markdown table written to `out`.

    Args:
        run_dirs: One entry per table row: a finished run directory (with ``results.json``), a
            plan directory with ``seed<N>/`` run directories, or a list of run directories (the
            seeds of one plan, labelled by their plan directory).
        out: Markdown file to write.
        plot: Optional PNG: error rate vs client model size with seed error bars, and the paired
            differences (:func:`espnet_ext.reporting.federated_figures.plot_error_vs_client_size`),
            linked from `out`.
        resamples: Bootstrap resamples of each paired difference.
        bootstrap_seed: Seed of the resampling (the same seed gives the same intervals).

    Returns:
        The markdown written.

    Raises:
        FileNotFoundError: A run that has not finished.
        ResultsError: Runs that cannot share a row, or `resamples` < 10.
    """
    from espnet_ext.evaluation.bootstrap import MIN_SAMPLES

    if resamples < MIN_SAMPLES:
        raise ResultsError(f"--bootstrap_resamples must be >= {MIN_SAMPLES} for a percentile interval, "
                           f"got {resamples}")
    groups = load_labelled(run_dirs)
    labels = [g[0]["label"] for g in groups]
    differences, notes = paired_differences(groups, labels, resamples, bootstrap_seed)
    table = comparison_table(groups, differences, notes)
    if plot is not None:
        from espnet_ext.reporting.federated_figures import plot_error_vs_client_size

        plot_error_vs_client_size(client_size_rows(groups), groups[0][0]["scores"]["pretrained"], plot,
                                  differences=differences)
        table += f"\n![CER vs client model size]({os.path.relpath(plot, Path(out).parent)})\n"
    write_text_atomic(out, table)
    return table
