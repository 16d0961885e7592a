"""The depth-sweep analysis (``layer_analysis depth``) on a synthetic experiment dir.

Each synthetic run has a config.yaml (encoder_conf.num_blocks: its depth), kept checkpoints of a
Conformer-shaped state dict whose groups grow as theta_tau = theta_0 * (1 + k * tau), finished
block and sub-module scans written with the scan module's own writers, and decoding scores
written by the scoring code as stage 5 writes them. Block b's error change after a reset to
tau = 0 is 10 * k(b) points: 1 + 0.1 b (ambient under the +2 points rule) or 5 + 0.1 b (critical);
a sub-module's is its block's times a factor of its kind, so the fractions are known.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

from espnet_ext.analysis.depth import (
    DELTA_FIGURE,
    FRACTION_FIGURE,
    POSITIONS_FIGURE,
    DepthOptions,
    block_positions,
    decode_error_rates,
    normalized_depth,
    run_depth_analysis,
)
from espnet_ext.analysis.cross_run import AnalysisInputError
from espnet_ext.bin.layer_analysis import main
from helpers import make_fake_run, write_fake_decoding

EPOCHS = 2
AMBIENT_K, CRITICAL_K = 0.1, 0.5
# Outside the blocks: (update rate k, so error change 10 * k points).
OUTSIDE_K = {"encoder.embed": 0.3, "encoder.after_norm": 0.02, "ctc": 0.8}
# Sub-module error change = its block's times this factor: with block changes of 1 or 5 points,
# self-attention, conv module and feed-forward follow the block, macaron FF and norms stay ambient.
SUB_FACTOR = {"enc_feed_forward_macaron": 0.3, "enc_self_attn": 1.0, "enc_conv_module": 1.5,
              "enc_feed_forward": 0.5, "enc_norms": 0.1}
GLOB = "asr_conformer*_seed*"


def make_depth_run(root, name, num_blocks, ambient, norm="batch_norm", seed=1, uncertain=None,
                   cer=None):
    """A finished run of `num_blocks` blocks whose blocks `ambient` are ambient, scanned at block
    and sub-module granularity.

    Args:
        uncertain: Blocks whose scan interval straddles the threshold; None: scans without
            intervals.
        cer: {set: characters wrong of 10} of the decodings; None: not decoded.
    """
    rates = dict(OUTSIDE_K)
    # 0.01 more per block: no two groups tie (their updates differ by float rounding only).
    rates.update({f"encoder.encoders.{i}": (AMBIENT_K if i in ambient else CRITICAL_K) + 0.01 * i
                  for i in range(num_blocks)})
    return make_fake_run(root, name, rates, epochs=EPOCHS, norm=norm, seed=seed,
                         granularities=("block", "submodule"), kind_factor=SUB_FACTOR,
                         uncertain=uncertain, decodings=cer, rerandomize=True)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Batch norm: 2 blocks x 2 seeds, 4 blocks x 2 seeds; group norm: 4 blocks x 1 seed."""
    root = tmp_path_factory.mktemp("depth") / "exp"
    make_depth_run(root, "asr_conformer_2x4_seed1", 2, {1}, seed=1, cer={"dev": 1, "test": 2})
    make_depth_run(root, "asr_conformer_2x4_seed2", 2, set(), seed=2, cer={"dev": 3, "test": 4})
    make_depth_run(root, "asr_conformer_4x4_seed1", 4, {1, 2, 3}, seed=1, uncertain={2},
                   cer={"dev": 1, "test": 1})
    make_depth_run(root, "asr_conformer_4x4_seed2", 4, {3}, seed=2, cer={"dev": 2, "test": 3})
    make_depth_run(root, "asr_conformer_gn_4x4_seed1", 4, {0, 3}, norm="group_norm", seed=1)
    # Not part of the sweep: the glob leaves it out.
    make_depth_run(root, "asr_transformer_seed1", 2, {0}, seed=1)
    return root


@pytest.fixture(scope="module")
def analysed(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("depth_out") / "analysis_depth_dev"
    result = run_depth_analysis(DepthOptions(exp_dir=sweep, runs_glob=GLOB, dataset="dev", out_dir=out))
    return result, json.loads((out / "depth.json").read_text())


def _setup(result, norm, blocks):
    return next(s for s in result.setups if s.norm == norm and s.num_blocks == blocks)


def test_setups_by_norm_and_depth(analysed):
    result, data = analysed
    assert [(s.norm, s.num_blocks, list(s.runs)) for s in result.setups] == [
        ("batch_norm", 2, ["asr_conformer_2x4_seed1", "asr_conformer_2x4_seed2"]),
        ("batch_norm", 4, ["asr_conformer_4x4_seed1", "asr_conformer_4x4_seed2"]),
        ("group_norm", 4, ["asr_conformer_gn_4x4_seed1"]),
    ]
    names = {r["name"] for r in data["runs"]["block"]}
    assert "asr_transformer_seed1" not in names and len(names) == 5
    assert [s["setup"] for s in data["setups"]] == ["batch_norm 2x4", "batch_norm 4x4", "group_norm 4x4"]


def test_ambient_fractions_per_kind(analysed):
    result, data = analysed
    bn4 = _setup(result, "batch_norm", 4)
    block = {k.kind: k for k in bn4.fractions["block"]}
    assert list(block) == ["enc_block"]  # embedding, final norm and CTC are no block groups
    assert [s.fraction for s in block["enc_block"].per_seed] == [0.75, 0.25]
    assert block["enc_block"].mean == pytest.approx(0.5)
    sub = {k.kind: k for k in bn4.fractions["submodule"]}
    assert list(sub) == ["enc_feed_forward_macaron", "enc_self_attn", "enc_conv_module",
                         "enc_feed_forward", "enc_norms"]
    for kind in ("enc_self_attn", "enc_conv_module", "enc_feed_forward"):
        assert [s.fraction for s in sub[kind].per_seed] == [0.75, 0.25]
    assert sub["enc_norms"].mean == sub["enc_feed_forward_macaron"].mean == 1.0
    assert [s.groups for s in sub["enc_norms"].per_seed] == [4, 4]
    # Uncertain counts: seed 1's scan has intervals (block 2 straddles), seed 2's has none.
    assert [s.uncertain for s in block["enc_block"].per_seed] == [1, None]
    assert [s.uncertain for s in sub["enc_self_attn"].per_seed] == [1, None]
    assert _setup(result, "batch_norm", 2).fractions["block"][0].mean == pytest.approx(0.25)
    assert _setup(result, "group_norm", 4).fractions["block"][0].mean == pytest.approx(0.5)
    stored = data["setups"][1]["fractions"]["block"][0]
    assert stored["kind"] == "enc_block" and stored["mean"] == 0.5
    assert [s["uncertain"] for s in stored["per_seed"]] == [1, None]


def test_block_positions(analysed):
    result, data = analysed
    bn4 = _setup(result, "batch_norm", 4)
    seed1, seed2 = bn4.positions
    assert [b.position for b in seed1.blocks] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert [b.mark for b in seed1.blocks] == ["critical", "ambient", "uncertain", "ambient"]
    assert seed1.ambient_positions() == pytest.approx([1 / 3, 1.0])
    assert [b.mark for b in seed2.blocks] == ["critical", "critical", "critical", "ambient"]
    # The fake scans' rule (+2 points) at their baseline; block b's change after the reset to
    # tau 0 is 10 * k(b): 5.0 for critical block 0, 1.1 for ambient block 1.
    assert {b.tolerance for b in seed1.blocks} == {2.0}
    assert [b.delta for b in seed1.blocks[:2]] == pytest.approx([5.0, 1.1])
    # The figure's values: change / tolerance (ambient block 1 below the threshold of 1).
    assert [v for point in seed1.delta_in_tolerances()[:2] for v in point] == pytest.approx([0.0, 2.5, 1 / 3, 0.55])
    assert _setup(result, "batch_norm", 2).positions[0].ambient_positions() == [1.0]
    stored = data["setups"][2]["positions"][0]
    assert stored["ambient_positions"] == [0.0, 1.0] and stored["blocks"][0]["mark"] == "ambient"
    assert normalized_depth(0, 1) == 0.0
    with pytest.raises(ValueError, match="outside"):
        normalized_depth(4, 4)


def test_error_rates_per_depth(analysed, sweep):
    result, data = analysed
    bn2 = _setup(result, "batch_norm", 2)
    rates = {(e.dataset, e.metric): e for e in bn2.error_rates}
    assert rates[("dev", "CER")].per_seed == pytest.approx(
        {"asr_conformer_2x4_seed1": 10.0, "asr_conformer_2x4_seed2": 30.0})
    assert rates[("dev", "CER")].mean == pytest.approx(20.0)
    assert rates[("test", "CER")].mean == pytest.approx(30.0)
    assert rates[("test", "WER")].mean == pytest.approx(100.0)
    assert data["options"]["decode_sets"] == ["dev", "test"]
    gn = _setup(result, "group_norm", 4)
    assert all(e.per_seed == {} and math.isnan(e.mean) for e in gn.error_rates)
    assert any("no decoding scores" in n and "asr_conformer_gn_4x4_seed1" in n for n in result.notes)
    assert decode_error_rates(sweep / "asr_conformer_4x4_seed2", ["test"]) == {
        "test": pytest.approx({"CER": 30.0, "WER": 100.0})}


def test_stability_and_weight_updates(analysed):
    result, _ = analysed
    bn4 = _setup(result, "batch_norm", 4)
    stab = bn4.stability["block"]
    # Ambient: the final norm and blocks {1, 2, 3} vs {3}: Jaccard 2/4; without the uncertain
    # block 2: 2/3.
    assert stab.mean_jaccard == pytest.approx(1 / 2)
    assert stab.mean_jaccard_decided == pytest.approx(2 / 3)
    assert math.isnan(_setup(result, "group_norm", 4).stability["block"].mean_jaccard)
    # Update k * T and error change 10 * k for every block group: ranks agree exactly.
    updates = bn4.updates["block"]
    assert set(updates.per_run) == set(bn4.runs)
    assert all(c.rho == pytest.approx(1.0) for c in updates.per_run.values())
    # Pooled: the same group of both seeds has the same change, its updates differ by rounding.
    assert updates.pooled.rho > 0.99 and updates.pooled.n == 2 * (4 + 3)


def test_reports_and_figures(analysed):
    result, data = analysed
    out = result.out_dir
    assert [p.name for p in result.figures] == [FRACTION_FIGURE, POSITIONS_FIGURE, DELTA_FIGURE]
    for name in (FRACTION_FIGURE, POSITIONS_FIGURE, DELTA_FIGURE):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["figures"] == [FRACTION_FIGURE, POSITIONS_FIGURE, DELTA_FIGURE]
    assert data["setups"][0]["positions"][0]["blocks"][0]["tolerance"] == 2.0
    md = (out / "depth.md").read_text()
    assert "| batch_norm | 4 | 2 | 0.50 (0.75, 0.25; ? 1, -) |" in md
    assert "| batch_norm | 4 | asr_conformer_4x4_seed1 | 1 | 0.33, 1.00 [0.67] |" in md
    assert "20.00 (10.00, 30.00)" in md
    assert f"![depth_ambient_fraction]({FRACTION_FIGURE})" in md
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_tau_option_and_block_scan_missing(sweep, tmp_path):
    out = tmp_path / "sub_only"
    result = run_depth_analysis(DepthOptions(exp_dir=sweep, runs_glob="asr_conformer_4x4_seed*",
                                             dataset="dev", out_dir=out, granularities=["submodule"],
                                             tau=1, decode_sets=["test"]))
    assert [p.name for p in result.figures] == [FRACTION_FIGURE]  # no block scan: no positions
    data = json.loads((out / "depth.json").read_text())
    assert {r["reset"]["value"] for r in data["runs"]["submodule"]} == {1}
    assert data["options"]["decode_sets"] == ["test"]
    # At tau 1 the changes are halved: 2.5 points for critical blocks' self-attention.
    sub = {k.kind: k for k in result.setups[0].fractions["submodule"]}
    assert [s.fraction for s in sub["enc_self_attn"].per_seed] == [0.75, 0.25]
    assert [s.fraction for s in sub["enc_conv_module"].per_seed] == [0.75, 0.25]
    assert [s.fraction for s in sub["enc_feed_forward"].per_seed] == [1.0, 1.0]
    with pytest.raises(AnalysisInputError, match="no trained experiment dir"):
        run_depth_analysis(DepthOptions(exp_dir=sweep, runs_glob="nothing_*", dataset="dev",
                                        out_dir=tmp_path / "none"))


def test_rerandomization_option(sweep, tmp_path):
    """--mode rerandomize reads the scans' re-randomization rows (CER 40: every group critical)."""
    out = tmp_path / "rerandomize"
    result = run_depth_analysis(DepthOptions(exp_dir=sweep, runs_glob="asr_conformer_4x4_seed*",
                                             dataset="dev", out_dir=out, mode="rerandomize"))
    data = json.loads((out / "depth.json").read_text())
    # make_fake_run re-randomizes with seed + 1: runs of seeds 1 and 2 read seeds 2 and 3.
    assert sorted(r["reset"]["value"] for r in data["runs"]["block"]) == [2, 3]
    assert {r["reset"]["mode"] for r in data["runs"]["block"]} == {"rerandomize"}
    assert data["options"]["mode"] == "rerandomize"
    block = result.setups[0].fractions["block"][0]
    assert [s.fraction for s in block.per_seed] == [0.0, 0.0]
    assert "reset: rerandomize seed=2, rerandomize seed=3 (each run's own);" in (out / "depth.md").read_text()
    # A seed no run scanned: each run says so, in one error.
    with pytest.raises(AnalysisInputError, match="seed=7"):
        run_depth_analysis(DepthOptions(exp_dir=sweep, runs_glob="asr_conformer_4x4_seed*",
                                        dataset="dev", out_dir=tmp_path / "s7", mode="rerandomize",
                                        reset_seed=7))
    with pytest.raises(ValueError, match="does not go with the rerandomize mode"):
        DepthOptions(exp_dir=sweep, runs_glob=GLOB, dataset="dev", out_dir=out, mode="rerandomize",
                     tau=0).reset()
    with pytest.raises(ValueError, match="needs the rerandomize mode"):
        DepthOptions(exp_dir=sweep, runs_glob=GLOB, dataset="dev", out_dir=out, reset_seed=2).reset()
    assert DepthOptions(exp_dir=sweep, runs_glob=GLOB, dataset="dev", out_dir=out,
                        tau=1).reset() == ("reinit", 1)


def test_several_decodings_need_a_tag(sweep, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sweep / "asr_conformer_2x4_seed1" / "decode_asr_valid.acc.ave",
                    run / "decode_asr_valid.acc.ave")
    write_fake_decoding(run / "decode_asr_latest" / "dev", 5)
    with pytest.raises(AnalysisInputError, match="several dirs .*--decode_tag"):
        decode_error_rates(run, ["dev"])
    assert decode_error_rates(run, ["dev"], "decode_asr_latest")["dev"]["CER"] == pytest.approx(50.0)


def test_cli(sweep, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["depth", "--exp_dir", str(sweep), "--runs_glob", GLOB, "--dataset", "dev",
               "--out_dir", str(out), "--granularity", "block"])
    stdout = capsys.readouterr().out
    assert rc == 0
    assert "batch_norm 4x4 (2 seeds): ambient fraction enc_block 0.50" in stdout
    assert f"{out}/depth.md (3 figures)" in stdout
    assert (out / "depth.json").is_file()
    rc = main(["depth", "--exp_dir", str(sweep), "--runs_glob", GLOB, "--dataset", "test",
               "--out_dir", str(tmp_path / "bad")])
    assert rc == 1
    assert "layer_analysis depth: error:" in capsys.readouterr().err
    for bad in (["--mode", "rerandomize", "--tau", "0"], ["--reset_seed", "2"]):
        with pytest.raises(SystemExit):
            main(["depth", "--exp_dir", str(sweep), "--runs_glob", GLOB, "--dataset", "dev",
                  "--out_dir", str(tmp_path / "bad"), *bad])
        assert "--reset_seed" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_block_positions_of_one_block_model(sweep):
    """A one-block encoder's only block sits at depth 0 (no division by zero)."""
    from espnet_ext.analysis.cross_run import collect_runs

    exp = sweep.parent / "one_block"
    make_depth_run(exp, "asr_conformer_1x4_seed1", 1, {0})
    coll = collect_runs([str(exp / "asr_*")], "block", "dev")
    positions = block_positions(coll.runs[0])
    assert [(b.position, b.mark) for b in positions.blocks] == [(0.0, "ambient")]


def _set_scan_baseline(run, cer):
    """Makes `run` look unconverged: its scans' baseline CER on dev becomes `cer` percent."""
    for scan_json in run.glob("scan_*_dev/scan.json"):
        meta = json.loads(scan_json.read_text())
        meta["baseline"]["dev"] = {"WER": 100.0, "CER": cer}
        scan_json.write_text(json.dumps(meta))


def test_runs_that_did_not_converge_are_left_out(sweep, tmp_path, capsys):
    """A model whose error is near 100% reads ambient everywhere: it is listed apart, not counted."""
    exp = tmp_path / "exp"
    for name in ("asr_conformer_4x4_seed1", "asr_conformer_4x4_seed2", "asr_conformer_gn_4x4_seed1"):
        shutil.copytree(sweep / name, exp / name)
    _set_scan_baseline(exp / "asr_conformer_4x4_seed2", 85.0)

    result = run_depth_analysis(DepthOptions(exp_dir=exp, runs_glob=GLOB, dataset="dev",
                                             out_dir=tmp_path / "out"))
    bn4 = _setup(result, "batch_norm", 4)
    assert list(bn4.runs) == ["asr_conformer_4x4_seed1"]
    assert [p.run for p in bn4.positions] == ["asr_conformer_4x4_seed1"]
    assert all(len(k.per_seed) == 1 for ks in bn4.fractions.values() for k in ks)
    [left] = result.not_converged
    assert (left.run, left.norm, left.num_blocks, left.seed, left.metric, left.base_error) == (
        "asr_conformer_4x4_seed2", "batch_norm", 4, 2, "CER", 85.0)
    assert left.error_rates["test"]["CER"] == pytest.approx(30.0)  # its decodings are still reported
    md = (tmp_path / "out" / "depth.md").read_text()
    assert "## Runs left out: not converged" in md
    assert "| batch_norm | 4 | asr_conformer_4x4_seed2 | 2 | CER 85.00 |" in md
    data = json.loads((tmp_path / "out" / "depth.json").read_text())
    assert [n["run"] for n in data["not_converged"]] == ["asr_conformer_4x4_seed2"]
    assert data["options"]["max_base_error"] == 50.0

    # No limit: every run counts; a limit below every baseline: one clear error.
    kept = run_depth_analysis(DepthOptions(exp_dir=exp, runs_glob=GLOB, dataset="dev",
                                           out_dir=tmp_path / "all", max_base_error=None))
    assert len(_setup(kept, "batch_norm", 4).runs) == 2 and kept.not_converged == []
    with pytest.raises(AnalysisInputError, match="every run's scan baseline is above"):
        run_depth_analysis(DepthOptions(exp_dir=exp, runs_glob=GLOB, dataset="dev",
                                        out_dir=tmp_path / "none", max_base_error=5.0))
    assert main(["depth", "--exp_dir", str(exp), "--runs_glob", GLOB, "--dataset", "dev",
                 "--out_dir", str(tmp_path / "cli"), "--max_base_error", "-1"]) == 0
    assert "left out" not in capsys.readouterr().out
    assert main(["depth", "--exp_dir", str(exp), "--runs_glob", GLOB, "--dataset", "dev",
                 "--out_dir", str(tmp_path / "cli2")]) == 0
    assert "left out (not converged): asr_conformer_4x4_seed2: CER 85% on dev" in capsys.readouterr().out


def test_training_time_per_run(sweep, tmp_path):
    """Epoch times of a run with ESPnet's checkpoint.pth are reported; runs without it are not."""
    import datetime

    import torch

    exp = tmp_path / "exp"
    shutil.copytree(sweep / "asr_conformer_2x4_seed1", exp / "asr_conformer_2x4_seed1")
    shutil.copytree(sweep / "asr_conformer_2x4_seed2", exp / "asr_conformer_2x4_seed2")
    stats = {e: {"train": {"time": datetime.timedelta(seconds=s)},
                 "valid": {"time": datetime.timedelta(seconds=1)}} for e, s in {1: 99, 2: 49, 3: 59}.items()}
    torch.save({"model": {}, "reporter": {"stats": stats, "epoch": 3}},
               exp / "asr_conformer_2x4_seed1" / "checkpoint.pth")
    result = run_depth_analysis(DepthOptions(exp_dir=exp, runs_glob=GLOB, dataset="dev",
                                             out_dir=tmp_path / "out"))
    [t] = _setup(result, "batch_norm", 2).training
    assert (t.run, t.epochs, t.median_epoch_s, t.min_epoch_s, t.total_s) == (
        "asr_conformer_2x4_seed1", 3, 60.0, 50.0, 210.0)
    assert "| batch_norm | 2 | asr_conformer_2x4_seed1 | 3 | 60 | 210 | 50 |" in \
        (tmp_path / "out" / "depth.md").read_text()
