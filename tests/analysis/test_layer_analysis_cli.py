"""layer_analysis CLI end to end on synthetic experiment dirs, and its clear errors.

Each synthetic run has a config.yaml, kept checkpoints of a Conformer-shaped state dict in
which group g's parameters grow as theta_tau = theta_0 * (1 + k_g * tau) (so its relative
update is known: k_g * T), and a finished scan written with the scan module's own writers,
whose error change after a reset to tau=0 is 10 * k_g points. The model also has a decoder
block, which the scans leave out.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import yaml

from espnet_ext.scan.labels import AmbientCriterion
from espnet_ext.scan.result import write_tsv
from espnet_ext.bin.layer_analysis import main
from helpers import make_fake_run

EPOCHS = 3
# Four parameters per block: self-attention, feed-forward, the conv module's norm, a norm.
BLOCK_PARAMS = ("self_attn.linear_q.weight", "feed_forward.w_1.weight", "conv_module.norm.weight",
                "norm_ff.weight")


def make_run(root, name, k, **options):
    """A finished run of EPOCHS epochs (make_fake_run's `options`); its scans rerandomize too
    unless told otherwise. `k`: {group name: update rate} of the block groups."""
    options.setdefault("rerandomize", True)
    return make_fake_run(root, name, k, epochs=EPOCHS, block_params=BLOCK_PARAMS, decoder=True,
                         **options)


def _k(*blocks, embed=0.5, after=0.4, ctc=0.6):
    k = {"encoder.embed": embed, "encoder.after_norm": after, "ctc": ctc}
    k.update({f"encoder.encoders.{i}": v for i, v in enumerate(blocks)})
    return k


@pytest.fixture(scope="module")
def exp_root(tmp_path_factory):
    """Batch norm x 2 seeds, group norm x 2 seeds (4 blocks), batch norm with 8 blocks."""
    root = tmp_path_factory.mktemp("layer_analysis") / "exp"
    # delta = 10*k: BN seed 1 ambient blocks 1,2,3; seed 2 ambient blocks 1,3.
    both = ("block", "submodule")
    make_run(root, "asr_conf_seed1", _k(0.3, 0.1, 0.15, 0.05), seed=1, granularities=both)
    make_run(root, "asr_conf_seed2", _k(0.3, 0.12, 0.35, 0.06), seed=2, granularities=both)
    # Names do not decide the variant: config.yaml (norm_conformer, group_norm) does.
    make_run(root, "asr_conf_gn_seed1", _k(0.3, 0.1, 0.35, 0.05), norm="group_norm", seed=1)
    make_run(root, "asr_misnamed", _k(0.3, 0.1, 0.35, 0.05), norm="group_norm", seed=2)
    make_run(root, "asr_conf_large_seed1", _k(0.3, 0.25, 0.1, 0.12, 0.15, 0.32, 0.05, 0.02), seed=1)
    # ESPnet's statistics dir matches exp/asr_* too.
    (root / "asr_stats_bpe50" / "train").mkdir(parents=True)
    return root


def test_end_to_end(exp_root, tmp_path, capsys, monkeypatch):
    from espnet_ext.analysis import weight_updates

    loads = []
    real_load = weight_updates.load_state_dict_file
    monkeypatch.setattr(weight_updates, "load_state_dict_file", lambda p: loads.append(p) or real_load(p))
    out = tmp_path / "analysis_block_dev"
    rc = main(["--exp_dirs", str(exp_root / "asr_*"), "--granularity", "block", "--dataset", "dev",
               "--out_dir", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0
    # Each checkpoint of each run is read once (and the scanned weights once).
    assert len(loads) == len(set(loads)) == 5 * (EPOCHS + 2)
    assert "skipped" in stdout and "asr_stats_bpe50" in stdout
    data = json.loads((out / "analysis.json").read_text())
    runs = {r["name"]: r for r in data["runs"]}
    assert set(runs) == {"asr_conf_seed1", "asr_conf_seed2", "asr_conf_gn_seed1", "asr_misnamed",
                         "asr_conf_large_seed1"}
    # Grouped by config.yaml, not by name.
    assert runs["asr_misnamed"]["variant"] == "group_norm 4x4"
    assert runs["asr_conf_seed2"]["variant"] == "batch_norm 4x4"
    assert runs["asr_conf_large_seed1"]["variant"] == "batch_norm 8x4"
    assert runs["asr_conf_seed1"]["reset"] == {"mode": "reinit", "value": 0}

    stab = {s["variant"]: s for s in data["seed_stability"]}
    bn = stab["batch_norm 4x4"]
    assert bn["runs"] == ["asr_conf_seed1", "asr_conf_seed2"]
    assert bn["mean_jaccard"] == pytest.approx(2 / 3)
    # deltas seed 1 [5,3,1,1.5,.5,4,6], seed 2 [5,3,1.2,3.5,.6,4,6]: sum d^2 = 2 over 7 groups
    assert bn["mean_spearman"] == pytest.approx(1 - 6 * 2 / (7 * 48))
    assert bn["always_ambient"] == ["encoder.encoders.1", "encoder.encoders.3"]
    assert stab["group_norm 4x4"]["mean_jaccard"] == 1.0
    assert math.isnan(stab["batch_norm 8x4"]["mean_jaccard"] or math.nan)  # one seed

    # Runs by size, norm, seed.
    assert [r["name"] for r in data["runs"]] == ["asr_conf_seed1", "asr_conf_seed2", "asr_conf_gn_seed1",
                                                  "asr_misnamed", "asr_conf_large_seed1"]
    pairs = {frozenset((p["a"], p["b"])): p for p in data["pairs"]}
    assert len(pairs) == 10
    assert pairs[frozenset(("asr_conf_seed1", "asr_conf_large_seed1"))]["aligned_by"] == "depth_bin"
    assert pairs[frozenset(("asr_conf_seed1", "asr_conf_gn_seed1"))]["aligned_by"] == "group"
    assert data["norm_sizes"] == {"4x4": ["batch_norm 4x4", "group_norm 4x4"]}
    # Pairs pooled by what differs: seed only (bn 1-2; gn 1-misnamed), norm (2 bn x 2 gn), size
    # (bn 8x4 vs the two bn 4x4), norm and size (bn 8x4 vs the two gn 4x4).
    kinds = {k["kind"]: k for k in data["pair_kinds"]}
    assert {k: v["pairs"] for k, v in kinds.items()} == {
        "seed only": 2, "norm": 4, "size": 2, "norm and size": 2}
    assert kinds["seed only"]["mean_chance_jaccard"] < kinds["seed only"]["mean_jaccard"]

    # Update k_g*T and delta 10*k_g rank identically in every run.
    for c in data["update_vs_delta"]["per_run"].values():
        assert c["rho"] == pytest.approx(1.0)
    assert data["update_vs_delta"]["pooled"]["n"] == 7 * 4 + 11

    layers = {g["group"]: g for g in runs["asr_conf_seed1"]["layers"]}
    assert layers["encoder.encoders.1"]["update"] == pytest.approx(0.1 * EPOCHS)
    assert layers["encoder.encoders.1"]["delta"] == pytest.approx(1.0)
    assert layers["encoder.encoders.1"]["num_blocks"] == 4
    updates = {u["group"]: u for u in runs["asr_conf_seed1"]["weight_updates"]}
    assert updates["encoder.encoders.2"]["from_init"] == pytest.approx([0, 0.15, 0.30, 0.45])
    assert "decoder.decoders.0" in updates and "decoder.decoders.0" not in layers

    depth = {(c["kind"], c["bin"]): c for c in data["by_depth"]["batch_norm 8x4"]}
    assert depth[("enc_block", 0)]["n"] == 2  # blocks 0, 1 of 8 in bin 0 of 4
    assert depth[("enc_block", 0)]["mean_delta"] == pytest.approx(2.75)

    for name in data["figures"]:
        assert (out / name).stat().st_size > 1000, name
    assert {"heatmap_seeds_batch_norm_4x4.png", "stability_jaccard.png", "stability_spearman.png",
            "depth_profile.png", "update_vs_delta.png", "trajectories.png"} <= set(data["figures"])
    md = (out / "analysis.md").read_text()
    assert "batch_norm 4x4: across 2 seeds, mean pairwise Jaccard of ambient sets 0.67 (chance " in md
    assert "### Agreement by what differs between two runs" in md
    assert "## Norm variants side by side: size 4x4" in md
    assert "![update_vs_delta](update_vs_delta.png)" in md
    assert "mean pairwise Jaccard" in stdout
    tsv = (out / "weight_updates.tsv").read_text().splitlines()
    assert tsv[0].startswith("run\tvariant\tseed\tgroup")
    assert len(tsv) == 1 + 4 * 8 + 12  # groups incl. the decoder block (4 blocks: 8, 8 blocks: 12)
    traj = (out / "trajectories.tsv").read_text().splitlines()
    assert len(traj) == 1 + (4 * 8 + 12) * (EPOCHS + 1)


def test_several_granularities_share_one_pass_over_the_checkpoints(exp_root, tmp_path, capsys,
                                                                    monkeypatch):
    from espnet_ext.analysis import weight_updates

    loads = []
    real_load = weight_updates.load_state_dict_file
    monkeypatch.setattr(weight_updates, "load_state_dict_file", lambda p: loads.append(p) or real_load(p))
    runs = [str(exp_root / "asr_conf_seed1"), str(exp_root / "asr_conf_seed2")]
    template = str(tmp_path / "analysis_{granularity}_dev")
    # Figures of an earlier analysis in the same dir that are not redrawn go; other files stay.
    (tmp_path / "analysis_block_dev").mkdir()
    (tmp_path / "analysis_block_dev" / "heatmap_seeds_old_variant.png").write_bytes(b"png")
    (tmp_path / "analysis_block_dev" / "notes.txt").write_text("mine")
    assert main(["--exp_dirs", *runs, "--granularity", "block", "submodule", "--dataset", "dev",
                 "--out_dir", template]) == 0
    assert "== block" in capsys.readouterr().out
    assert len(loads) == len(set(loads)) == 2 * (EPOCHS + 2)
    assert not (tmp_path / "analysis_block_dev" / "heatmap_seeds_old_variant.png").exists()
    assert (tmp_path / "analysis_block_dev" / "notes.txt").read_text() == "mine"
    block = json.loads((tmp_path / "analysis_block_dev" / "analysis.json").read_text())
    sub = json.loads((tmp_path / "analysis_submodule_dev" / "analysis.json").read_text())
    assert block["options"]["granularity"] == "block" and sub["options"]["granularity"] == "submodule"
    layers = {g["group"]: g for g in sub["runs"][0]["layers"]}
    conv = layers["encoder.encoders.1.conv_module"]
    assert conv["kind"] == "enc_conv_module" and conv["update"] == pytest.approx(0.1 * EPOCHS)
    assert {k["kind"] for k in sub["runs"][0]["layers"]} >= {"enc_self_attn", "enc_feed_forward", "enc_norms"}
    # one template for several granularities is required
    with pytest.raises(SystemExit):
        main(["--exp_dirs", *runs, "--granularity", "block", "submodule", "--dataset", "dev",
              "--out_dir", str(tmp_path / "one_dir")])


def test_other_reset_uses_the_matching_update(exp_root, tmp_path):
    out = tmp_path / "tau1"
    rc = main(["--exp_dirs", str(exp_root / "asr_conf_seed1"), str(exp_root / "asr_conf_seed2"),
               "--dataset", "dev", "--out_dir", str(out), "--mode", "reinit", "--tau", "1"])
    assert rc == 0
    data = json.loads((out / "analysis.json").read_text())
    layers = {g["group"]: g for g in data["runs"][0]["layers"]}
    # reinit to tau=1 undoes ||theta_T - theta_1|| / ||theta_1|| = k(T-1) / (1+k)
    assert layers["encoder.encoders.1"]["update"] == pytest.approx(0.1 * 2 / 1.1)
    assert layers["encoder.encoders.1"]["delta"] == pytest.approx(1.0 * 2 / 3, abs=1e-4)


def _fails(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1
    return err


def test_clear_errors(exp_root, tmp_path, capsys):
    root = tmp_path / "exp"
    good = exp_root / "asr_conf_seed1"
    no_scan = make_run(root, "asr_noscan_seed1", _k(0.1, 0.2), scan=False)
    err = _fails(capsys, ["--exp_dirs", str(good), str(no_scan), "--dataset", "dev",
                          "--out_dir", str(tmp_path / "o")])
    assert "asr_noscan_seed1: no layer-reset scan at granularity 'block' on 'dev'" in err
    assert "stage 6" in err and "espnet_ext.bin.layer_scan" in err and "--allow_missing" in err

    no_ckpt = make_run(root, "asr_nockpt_seed1", _k(0.1, 0.2))
    shutil.rmtree(no_ckpt / "checkpoints")
    # Checkpoint 0 neither saved nor reconstructable (the init_param file it started from is gone).
    config = yaml.safe_load((no_ckpt / "config.yaml").read_text())
    (no_ckpt / "config.yaml").write_text(yaml.safe_dump({**config, "init_param": ["gone/model.pth"]}))
    err = _fails(capsys, ["--exp_dirs", str(no_ckpt), "--dataset", "dev", "--out_dir", str(tmp_path / "o")])
    assert "checkpoint 0 (the initial weights) is not saved" in err
    assert "init_param file gone/model.pth not found" in err and "stage 4" in err

    # --allow_missing: both are skipped with their reasons, the rest is analysed.
    rc = main(["--exp_dirs", str(good), str(no_scan), str(no_ckpt), "--dataset", "dev",
               "--out_dir", str(tmp_path / "partial"), "--allow_missing"])
    out = capsys.readouterr().out
    assert rc == 0 and "skipped" in out and "asr_noscan_seed1" in out and "asr_nockpt_seed1" in out

    running = make_run(root, "asr_running_seed1", _k(0.1, 0.2), status="running")
    err = _fails(capsys, ["--exp_dirs", str(running), "--dataset", "dev", "--out_dir", str(tmp_path / "o")])
    assert "the scan is not finished (scan.json status: running)" in err

    err = _fails(capsys, ["--exp_dirs", str(good), "--dataset", "dev", "--out_dir", str(tmp_path / "o"),
                          "--mode", "reinit", "--tau", "3"])
    assert ("reinit with tau=3 was not scanned "
            "(scanned: reinit tau=0, reinit tau=1, rerandomize seed=2)") in err

    other_rule = make_run(root, "asr_rule_seed3", _k(0.1, 0.2), seed=3,
                          criterion=AmbientCriterion("cer", abs_points=1.0, rel=None))
    err = _fails(capsys, ["--exp_dirs", str(good), str(other_rule), "--dataset", "dev",
                          "--out_dir", str(tmp_path / "o")])
    assert "different rules" in err and "--threshold_" in err

    err = _fails(capsys, ["--exp_dirs", str(tmp_path / "nothing_*"), "--dataset", "dev",
                          "--out_dir", str(tmp_path / "o")])
    assert "no trained experiment dir" in err
    assert not (tmp_path / "o").exists()  # nothing written on failure

    with pytest.raises(SystemExit):
        main(["--exp_dirs", str(good), "--dataset", "dev", "--out_dir", str(tmp_path / "o"), "--tau", "1"])


def test_stability_with_and_without_uncertain_labels(exp_root, tmp_path, capsys, monkeypatch):
    from espnet_ext.reporting import figures
    from espnet_ext.scan.result import read_tsv

    drawn = {}
    real = figures.plot_heatmap

    def spy(panels, rows, cols, path, **kw):
        drawn[path.name] = (rows, cols, dict(kw, uncertain=[p.uncertain for p in panels]))
        return real(panels, rows, cols, path, **kw)

    monkeypatch.setattr(figures, "plot_heatmap", spy)

    root = tmp_path / "exp"
    for name in ("asr_conf_seed1", "asr_conf_seed2"):
        shutil.copytree(exp_root / name, root / name)
    # Scans with intervals: block 2 of seed 2 (delta 3.5 against a tolerance of 2) is uncertain.
    for name in ("asr_conf_seed1", "asr_conf_seed2"):
        tsv = root / name / "scan_block_dev" / "scan.tsv"
        rows = read_tsv(tsv)
        for r in rows:
            r.label_ci = r.label
            if name == "asr_conf_seed2" and r.group == "encoder.encoders.2" and r.tau == 0:
                r.label_ci = "uncertain"
        write_tsv(tsv, rows)
    out = tmp_path / "analysis"
    assert main(["--exp_dirs", str(root / "asr_*"), "--granularity", "block", "--dataset", "dev",
                 "--out_dir", str(out)]) == 0
    capsys.readouterr()
    data = json.loads((out / "analysis.json").read_text())
    (stab,) = data["seed_stability"]
    assert stab["mean_jaccard"] == pytest.approx(2 / 3) and stab["mean_jaccard_decided"] == 1.0
    md = (out / "analysis.md").read_text()
    assert "mean pairwise Jaccard of ambient sets 0.67 (chance " in md  # the reading: both figures
    assert ", 1.00 without uncertain labels)" in md
    assert "| asr_conf_seed2 | batch_norm 4x4 | 2 | 7 | 2 | 1 |" in md  # runs table: 1 uncertain
    assert "| 1.00 (6) |" in md  # the pair: Jaccard over the 6 groups decided in both runs
    # The seeds' heatmap marks the uncertain cell (seed 2's panel, block 2, tau=0) only.
    rows, cols, kw = drawn["heatmap_seeds_batch_norm_4x4.png"]
    marked = [(p, rows[r], cols[c]) for p, m in enumerate(kw["uncertain"])
              for r, line in enumerate(m) for c, v in enumerate(line) if v]
    assert marked == [(1, "encoder.encoders.2", "tau=0")] and "?: uncertain" in kw["title"]
