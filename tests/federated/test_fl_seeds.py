"""Federated comparisons over several seeds: mean and spread per plan, paired bootstrap intervals of
targeted minus uniform / no dropout, from synthetic finished runs (results.json + per_utt.tsv)."""

import json
from pathlib import Path

import numpy as np
import pytest

from espnet_ext.federated.bootstrap import paired_bootstrap
from espnet_ext.federated.evaluate import read_per_utterance, write_per_utterance
from espnet_ext.federated.results import ResultsError, load_group, write_comparison

REF_CHARS, REF_WORDS, UTTS = 10, 2, 5


def _write_run(run_dir: Path, plan: str, seed: int, char_errors, fraction=0.8, rounds_with_updates=2,
               word_errors=None):
    """A finished run whose final adapt CER/WER follow from its per-utterance counts (word errors:
    the character errors capped at the reference words, unless given)."""
    run_dir.mkdir(parents=True)
    if word_errors is None:
        word_errors = [min(e, REF_WORDS) for e in char_errors]
    rows = [(f"u{i}", REF_WORDS, w, REF_CHARS, c) for i, (w, c) in enumerate(zip(word_errors, char_errors))]
    write_per_utterance(run_dir / "per_utt.tsv", {"adapt": rows})
    cer = round(100.0 * sum(char_errors) / (REF_CHARS * len(rows)), 2)
    wer = round(100.0 * sum(word_errors) / (REF_WORDS * len(rows)), 2)
    cost = {"updates": 4, "failures": 0, "params_trained": 1000 * fraction, "params_fraction": fraction,
            "bytes_down": 4e6, "bytes_up": 4e6, "step_seconds": 0.1, "peak_rss_bytes": 5e8}
    results = {"run": run_dir.name, "plan": plan, "plan_note": f"{plan} note", "rounds": 2, "seed": seed,
               "rounds_with_updates": rounds_with_updates, "cost": cost, "round_seconds": 1.0,
               "scores": {"pretrained": {"adapt": {"WER": 90.0, "CER": 60.0}},
                          "final": {"adapt": {"WER": wer, "CER": cer}}}}
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def _rows(table: str):
    return [line.split("|") for line in table.splitlines() if line.startswith("|")]


def test_seed_directories_give_one_row_with_mean_std_and_range_of_their_runs(tmp_path):
    # Seeds 1-3 of one plan at CER 30, 32 and 36 (15, 16, 18 character errors in 50): mean 32.67,
    # sample std sqrt(((-2.67)^2 + (-0.67)^2 + 3.33^2) / 2) = 3.06, range 30-36.
    plan_dir = tmp_path / "r0.5" / "uniform"
    for seed, errors in ((1, [3, 3, 3, 3, 3]), (2, [4, 3, 3, 3, 3]), (3, [4, 4, 4, 3, 3])):
        _write_run(plan_dir / f"seed{seed}", "uniform", seed, errors)
    single = _write_run(tmp_path / "r0.5" / "none", "none", 0, [2] * 5, fraction=1.0)
    table = write_comparison([single, plan_dir], tmp_path / "results.md")
    rows = _rows(table)
    head = rows[0]
    by_label = {r[1]: r for r in rows[2:]}
    assert by_label["uniform"][head.index("adapt CER")] == "32.67 ± 3.06 (30.00-36.00)"
    assert by_label["uniform"][head.index("seeds")] == "1,2,3"
    assert by_label["none"][head.index("adapt CER")] == "20.00"  # a single run keeps its plain value
    assert by_label["none"][head.index("seeds")] == "0"
    assert "mean ± sample standard deviation (min-max) over the seeds" in table
    assert [r["seed"] for r in load_group(plan_dir)] == [1, 2, 3]


def test_paired_bootstrap_of_identical_counts_is_zero_and_a_constant_shift_is_exact():
    rng = np.random.default_rng(0)
    errors = rng.integers(0, 8, size=(3, 40))
    ref = rng.integers(5, 20, size=40)
    same = paired_bootstrap(errors, errors, ref, resamples=500, seed=1)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)
    # One more character error on every utterance of 10 characters: +10 points in every resample.
    shifted = paired_bootstrap(np.full(30, 3), np.full(30, 2), np.full(30, 10), resamples=300, seed=2)
    assert (shifted.difference, shifted.low, shifted.high) == pytest.approx((10.0, 10.0, 10.0))
    assert (shifted.utterances, shifted.seeds_a, shifted.seeds_b) == (30, 1, 1)


def test_paired_bootstrap_is_reproducible_with_its_seed_and_averages_seeds_first():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 6, size=(3, 60))
    b = rng.integers(0, 6, size=(2, 60))
    ref = rng.integers(5, 15, size=60)
    one = paired_bootstrap(a, b, ref, resamples=1000, seed=7)
    assert paired_bootstrap(a, b, ref, resamples=1000, seed=7) == one
    assert paired_bootstrap(a, b, ref, resamples=1000, seed=8) != one
    # Point estimate: the difference of the seed-mean error rates.
    expected = 100 * (a.mean(axis=0).sum() - b.mean(axis=0).sum()) / ref.sum()
    assert one.difference == pytest.approx(expected)
    assert one.low < one.difference < one.high
    # Seeds are averaged before resampling: the same as one run holding the mean counts.
    assert paired_bootstrap(a.mean(axis=0), b.mean(axis=0), ref, resamples=1000, seed=7).low == pytest.approx(one.low)
    with pytest.raises(ValueError, match="same utterances on both sides"):
        paired_bootstrap(a, b[:, :50], ref)


def test_comparison_pairs_targeted_with_uniform_of_its_rate_and_the_only_no_dropout_run(tmp_path):
    # Errors vary across utterances (hard and easy ones) but differ between plans by the same
    # amount on every utterance: paired resampling gives an interval of zero width, resampling
    # each plan's utterances independently would not.
    chars, words = np.array([0, 6, 1, 7, 3]), np.array([0, 1, 0, 1, 0])
    none = tmp_path / "r0.25" / "none"
    for seed in (1, 2):
        _write_run(none / f"seed{seed}", "none", seed, chars, fraction=1.0, word_errors=words)
    for rate in ("r0.25", "r0.5"):
        for seed in (1, 2):
            # targeted: one more character error per utterance than uniform (+10 CER points),
            # and two more than no dropout (+20); one more word error than no dropout (+50 WER).
            _write_run(tmp_path / rate / "uniform" / f"seed{seed}", "uniform", seed, chars + 1,
                       word_errors=words + 1)
            _write_run(tmp_path / rate / "targeted" / f"seed{seed}", "targeted", seed, chars + 2,
                       word_errors=words + 1)
    dirs = [none, tmp_path / "r0.25" / "uniform", tmp_path / "r0.25" / "targeted",
            tmp_path / "r0.5" / "uniform", tmp_path / "r0.5" / "targeted"]
    out = tmp_path / "fl" / "results.md"
    table = write_comparison(dirs, out, plot=tmp_path / "fl" / "cer.png", resamples=200)
    assert "|r0.25/targeted - r0.25/uniform|adapt|CER|+10.00|[+10.00, +10.00]|5|2/2|" in table
    assert "|r0.5/targeted - r0.5/uniform|adapt|CER|+10.00|[+10.00, +10.00]|5|2/2|" in table
    assert "|r0.5/targeted - none|adapt|CER|+20.00|[+20.00, +20.00]|5|2/2|" in table
    assert "|r0.25/targeted - none|adapt|WER|+50.00|[+50.00, +50.00]|5|2/2|" in table
    assert "95% paired bootstrap interval over the same test utterances (200 resamples, resampling seed 0)" in table
    assert out.read_text() == table
    assert (tmp_path / "fl" / "cer.png").stat().st_size > 1000


def test_missing_or_stale_per_utterance_counts_are_named_instead_of_an_interval(tmp_path):
    uniform = _write_run(tmp_path / "r0.5" / "uniform", "uniform", 0, [2] * 5)
    targeted = _write_run(tmp_path / "r0.5" / "targeted", "targeted", 0, [3] * 5)
    (uniform / "per_utt.tsv").unlink()
    table = write_comparison([uniform, targeted], tmp_path / "out.md")
    assert f"{uniform / 'per_utt.tsv'} not found" in table and "re-run the same fl_simulate command" in table
    write_per_utterance(uniform / "per_utt.tsv", {"adapt": [(f"u{i}", 2, 0, 10, 0) for i in range(5)]})
    table = write_comparison([uniform, targeted], tmp_path / "out.md")
    assert "the adapt WER of its counts (0.00) is not the run's final WER (100.00)" in table


def _add_eval_set(run_dir: Path, name: str, char_errors) -> None:
    """Add evaluation set `name` (its final scores and per-utterance counts) to a written run."""
    results = json.loads((run_dir / "results.json").read_text())
    counts = read_per_utterance(run_dir / "per_utt.tsv")
    rows = {s: [(u,) + c for u, c in utts.items()] for s, utts in counts.items()}
    rows[name] = [(f"v{i}", REF_WORDS, min(e, REF_WORDS), REF_CHARS, e) for i, e in enumerate(char_errors)]
    write_per_utterance(run_dir / "per_utt.tsv", rows)
    results["scores"]["final"][name] = {
        "WER": round(100.0 * sum(r[2] for r in rows[name]) / (REF_WORDS * len(rows[name])), 2),
        "CER": round(100.0 * sum(r[4] for r in rows[name]) / (REF_CHARS * len(rows[name])), 2)}
    (run_dir / "results.json").write_text(json.dumps(results))


def test_a_later_seed_without_an_evaluation_set_is_named_instead_of_an_interval(tmp_path):
    for plan, errors in (("uniform", [2] * 5), ("targeted", [3, 2, 3, 4, 3])):
        for seed in (1, 2):
            run = _write_run(tmp_path / plan / f"seed{seed}", plan, seed, errors)
            if seed == 1:  # seed 2 was not evaluated on "orig"
                _add_eval_set(run, "orig", errors)
    table = write_comparison([tmp_path / "uniform", tmp_path / "targeted"], tmp_path / "out.md", resamples=100)
    assert (f"targeted - uniform: no paired interval on orig: the run in {tmp_path / 'targeted' / 'seed2'} "
            "has no orig scores (it was not evaluated on orig)") in table
    assert "|targeted - uniform|adapt|CER|+10.00|" in table  # the set every run has is still compared


def test_two_runs_of_one_row_with_the_same_seed_are_refused(tmp_path):
    a = _write_run(tmp_path / "a", "uniform", 1, [2] * 5)
    b = _write_run(tmp_path / "b", "uniform", 1, [3] * 5)
    with pytest.raises(ResultsError, match="are both seed 1"):
        load_group([a, b])


def test_run_without_any_client_update_is_flagged_in_the_table(tmp_path):
    run = _write_run(tmp_path / "none", "none", 0, [2] * 5, rounds_with_updates=0)
    table = write_comparison([run], tmp_path / "out.md")
    assert "**none: rounds_with_updates: 0**: no client update in any of its 2 rounds; global model unchanged" in table


def test_compare_command_reads_plan_directories_with_seed_runs(tmp_path, capsys):
    from espnet_ext.bin.fl_simulate import main

    for plan, errors in (("uniform", [2] * 5), ("targeted", [2, 2, 2, 2, 3])):
        for seed in (1, 2):
            _write_run(tmp_path / plan / f"seed{seed}", plan, seed, errors)
    code = main(["compare", str(tmp_path / "uniform"), str(tmp_path / "targeted"), "--out",
                 str(tmp_path / "results.md"), "--bootstrap_resamples", "100"])
    assert code == 0
    assert "|targeted - uniform|adapt|CER|+2.00|" in (tmp_path / "results.md").read_text()
    (tmp_path / "uniform" / "seed3").mkdir()  # a seed that has not finished
    assert main(["compare", str(tmp_path / "uniform"), "--out", str(tmp_path / "x.md")]) == 1
    assert "the run in" in capsys.readouterr().err and not (tmp_path / "x.md").exists()
    # --seeds picks the finished seeds of each plan directory.
    assert main(["compare", str(tmp_path / "uniform"), "--seeds", "2", "--out", str(tmp_path / "x.md")]) == 0
    rows = _rows((tmp_path / "x.md").read_text())
    assert rows[3][rows[0].index("seeds")] == "2"


def test_per_utterance_file_round_trips_and_rejects_a_malformed_line(tmp_path):
    rows = [("u1", 2, 1, 9, 3), ("u2", 3, 0, 12, 0)]
    path = write_per_utterance(tmp_path / "per_utt.tsv", {"adapt": rows})
    assert read_per_utterance(path) == {"adapt": {"u1": (2, 1, 9, 3), "u2": (3, 0, 12, 0)}}
    path.write_text(path.read_text() + "adapt\tu3\t2\n")
    with pytest.raises(ValueError, match=r"per_utt.tsv:4: expected 6 tab-separated fields"):
        read_per_utterance(path)


def test_explicit_run_lists_are_labelled_by_their_plan_directory(tmp_path):
    # A single-seed run next to seed<N>/ runs of an earlier call: a list names exactly which runs.
    plan_dir = _write_run(tmp_path / "targeted", "targeted", 0, [2] * 5)
    _write_run(plan_dir / "seed1", "targeted", 1, [4] * 5)
    rows = _rows(write_comparison([[plan_dir]], tmp_path / "a.md"))
    assert rows[3][1] == "targeted" and rows[3][rows[0].index("adapt CER")] == "20.00"
    rows = _rows(write_comparison([[plan_dir / "seed1"]], tmp_path / "b.md"))
    assert rows[3][1] == "targeted" and rows[3][rows[0].index("adapt CER")] == "40.00"
    rows = _rows(write_comparison([plan_dir], tmp_path / "c.md"))  # a plan dir: its seed runs
    assert rows[3][rows[0].index("seeds")] == "1"
