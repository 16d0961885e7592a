"""Conformer, Transformer, Branchformer and E-Branchformer encoders in the layer map and the scan's
staged forward: forward-order sub-modules, one kind vocabulary, prefix reuse equal to ESPnet."""

import pytest
import torch

from helpers import TINY_ENCODERS, build_family_model

asr = pytest.importorskip("espnet2.tasks.asr")

from espnet_ext.evaluation.encoder_stages import LEVEL_FEATS, EncoderStages  # noqa: E402
from espnet_ext.layers.layer_map import (  # noqa: E402
    _SUBMODULE_ORDER,
    BLOCK_SUBMODULES,
    build_layer_map,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for family in TINY_ENCODERS:
        model = build_family_model(tmp_path_factory.mktemp(family), family)
        with torch.no_grad():  # ESPnet initializes some gates to constants; make every unit matter
            for p in model.encoder.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        out[family] = model.eval()
    return out


# Sub-modules of block 0 of each tiny model, in the forward order of its block's forward().
EXPECTED_BLOCK0 = {
    "conformer": [("feed_forward_macaron", "enc_feed_forward_macaron"), ("self_attn", "enc_self_attn"),
                  ("conv_module", "enc_conv_module"), ("feed_forward", "enc_feed_forward"),
                  ("norms", "enc_norms")],
    "transformer": [("self_attn", "enc_self_attn"), ("feed_forward", "enc_feed_forward"),
                    ("norms", "enc_norms")],
    "branchformer": [("attn", "enc_self_attn"), ("cgmlp", "enc_cgmlp"), ("merge_proj", "enc_merge"),
                     ("norms", "enc_norms")],
    "branchformer_learned_ave": [("attn", "enc_self_attn"), ("cgmlp", "enc_cgmlp"),
                                 ("merge_weights", "enc_merge"), ("merge_proj", "enc_merge"),
                                 ("norms", "enc_norms")],
    "e_branchformer": [("feed_forward_macaron", "enc_feed_forward_macaron"), ("attn", "enc_self_attn"),
                       ("cgmlp", "enc_cgmlp"), ("depthwise_conv_fusion", "enc_fusion"),
                       ("merge_proj", "enc_merge"), ("feed_forward", "enc_feed_forward"),
                       ("norms", "enc_norms")],
}


@pytest.mark.parametrize("family", list(TINY_ENCODERS))
def test_submodules_in_forward_order_with_shared_kinds(models, family):
    model = models[family]
    m = build_layer_map(model, "submodule")
    block0 = [(g.name.rsplit(".", 1)[1], g.kind) for g in m if g.name.startswith("encoder.encoders.0.")]
    assert block0 == EXPECTED_BLOCK0[family]
    # Every parameter is in exactly one group; the blocks' groups are the block map's, split finer.
    seen = [k for g in m for k in g.keys]
    assert len(seen) == len(set(seen))
    assert {n for n, _ in model.named_parameters()} <= set(seen)
    block_map = build_layer_map(model, "block")
    assert set(block_map["encoder.encoders.1"].keys) == {
        k for g in m if g.name.startswith("encoder.encoders.1.") for k in g.keys}
    # Depth is block / blocks, whatever the family: block 1 of 2 sits at 0.5.
    assert {g.depth for g in m if g.name.startswith("encoder.encoders.1.")} == {0.5}
    if family == "branchformer_learned_ave":
        assert {k.split(".")[3] for k in m["encoder.encoders.0.merge_weights"].keys} == {
            "pooling_proj1", "pooling_proj2", "weight_proj1", "weight_proj2"}
    if family == "e_branchformer":
        norms = {k.split(".")[3] for k in m["encoder.encoders.0.norms"].keys}
        assert norms == {"norm_ff", "norm_ff_macaron", "norm_mha", "norm_mlp", "norm_final"}
        # The gate's layer norm belongs to the cgMLP, not to the block's norms.
        assert "encoder.encoders.0.cgmlp.csgu.norm.weight" in m["encoder.encoders.0.cgmlp"].keys


def test_one_order_serves_every_family():
    for family, order in BLOCK_SUBMODULES.items():
        ranks = [_SUBMODULE_ORDER.index(s) for s in order if s != "norms"]
        assert ranks == sorted(ranks), family


def _padded_features(seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([61, 47, 33])
    feats = torch.randn(3, int(lens.max()), 20, generator=g)
    for b, n in enumerate(lens.tolist()):
        feats[b, n:] = 0.0
    return feats, lens


@pytest.mark.parametrize("family", list(TINY_ENCODERS))
def test_staged_forward_and_prefix_reuse_equal_espnet(models, family):
    model = models[family]
    stages = EncoderStages(model)
    assert stages.block_reuse, stages.unsupported_reason
    feats, lens = _padded_features()
    with torch.no_grad():
        ref, ref_lens, _ = model.encoder(feats, lens)  # stock ESPnet forward
    staged, staged_lens = stages.run(LEVEL_FEATS, (feats, lens), stages.level_output)
    assert torch.equal(staged_lens, ref_lens)
    torch.testing.assert_close(staged, ref, rtol=0, atol=1e-6)
    assert stages.self_check(feats, lens)

    # A variant of block 1 reuses the trained model's input of block 1 (level 1).
    cached = stages.run(LEVEL_FEATS, (feats, lens), 1)
    state = model.state_dict()
    key = next(k for k in state if k.startswith("encoder.encoders.1.") and k.endswith("weight"))
    saved = state[key].clone()
    try:
        with torch.no_grad():
            state[key].add_(torch.randn_like(saved))
            reused, _ = stages.run(1, cached, stages.level_output)
            full, _ = stages.run(LEVEL_FEATS, (feats, lens), stages.level_output)
            stock, _, _ = model.encoder(feats, lens)
    finally:
        with torch.no_grad():
            state[key].copy_(saved)
    assert not torch.allclose(reused, ref)  # the change matters
    torch.testing.assert_close(reused, full, rtol=0, atol=1e-6)
    torch.testing.assert_close(reused, stock, rtol=0, atol=1e-6)


def test_other_encoders_fall_back_with_the_families_named(tmp_path):
    from helpers import tiny_asr_config, write_char_token_list
    import yaml

    config = tiny_asr_config()
    config["encoder"], config["encoder_conf"] = "rnn", {"num_layers": 1, "hidden_size": 8,
                                                        "output_size": 8}
    path = tmp_path / "rnn.yaml"
    path.write_text(yaml.safe_dump(config))
    args = asr.ASRTask.get_parser().parse_args(
        ["--config", str(path), "--token_type", "char",
         "--token_list", str(write_char_token_list(tmp_path / "tokens.txt"))])
    stages = EncoderStages(asr.ASRTask.build_model(args))
    assert not stages.block_reuse
    assert stages.unsupported_reason == (
        "encoder type RNNEncoder is not one of Conformer, Transformer, Branchformer, E-Branchformer")


# -- federated dropout plans ----------------------------------------------------------------------

SYNTH_CONF = __import__("pathlib").Path(__file__).resolve().parents[2] / "egs2" / "synth_en" / "asr1" / "conf"


def _recipe_model(tmp_path, config_name):
    from helpers import write_char_token_list

    from espnet_ext.experiment.training import CheckpointKeepingASRTask  # parses the cpu_* keys

    args = CheckpointKeepingASRTask.get_parser().parse_args(
        ["--config", str(SYNTH_CONF / config_name), "--token_type", "char",
         "--token_list", str(write_char_token_list(tmp_path / "tokens.txt"))])
    torch.manual_seed(0)
    return asr.ASRTask.build_model(args)


def test_uniform_dropout_shrinks_an_e_branchformer_as_much_as_a_conformer(tmp_path):
    """The default recipe's E-Branchformer and Conformer (4 x 96, 1.08 M vs 1.07 M encoder
    parameters): the same uniform rate over the encoder keeps about the same share of each."""
    from espnet_ext.federated.plan import ModelInfo, uniform_plan

    kept = {}
    documented = {"train_asr_conformer.yaml": 1.070, "train_asr_e_branchformer.yaml": 1.077}
    for name, encoder_millions in documented.items():
        model = _recipe_model(tmp_path, name)
        assert sum(p.numel() for p in model.encoder.parameters()) / 1e6 == pytest.approx(
            encoder_millions, abs=0.0005), name  # the sizes the configs' comments state
        info = ModelInfo.from_model(model)
        kept[name] = uniform_plan(info, 0.5, stacks=("encoder",)).cost(info)["params_fraction"]
    print("parameters kept at uniform rate 0.5 over the encoder: " +
          ", ".join(f"{n}: {f:.3f}" for n, f in kept.items()))
    conformer, e_branchformer = kept.values()
    assert 0.6 < conformer < 0.8
    assert e_branchformer == pytest.approx(conformer, abs=0.03)


@pytest.fixture(scope="module")
def e_branchformer_info(models):
    from espnet_ext.federated.plan import ModelInfo

    return ModelInfo.from_model(models["e_branchformer"])


def test_uniform_plan_drops_cgmlp_and_merge_channels(e_branchformer_info):
    from espnet_ext.federated.plan import uniform_plan

    rates = uniform_plan(e_branchformer_info, 0.5, stacks=("encoder",)).module_rates(
        e_branchformer_info.modules)
    for b in (0, 1):
        for sub in ("cgmlp", "merge_proj", "attn", "feed_forward", "feed_forward_macaron"):
            assert rates[f"encoder.encoders.{b}.{sub}"] == 0.5


def _importance(info, ambient):
    from espnet_ext.federated.plan import GroupImportance

    return [GroupImportance(g, "ambient" if g in ambient else "critical", 0.5 if g in ambient else 9.0)
            for g in info.group_names if g.startswith("encoder.encoders.")]


def test_targeted_plan_drops_ambient_cgmlp_groups(e_branchformer_info):
    from espnet_ext.federated.plan import targeted_plan

    plan = targeted_plan(e_branchformer_info, _importance(e_branchformer_info, {"encoder.encoders.1.cgmlp"}),
                         0.5, source="scan.tsv")
    assert dict(plan.group_rates) == {"encoder.encoders.1.cgmlp": 0.5}
    assert plan.module_rates(e_branchformer_info.modules) == {"encoder.encoders.1.cgmlp": 0.5}
    assert plan.cost(e_branchformer_info)["params_fraction"] < 1.0


def test_targeted_plan_names_ambient_groups_it_cannot_drop(e_branchformer_info, caplog):
    from espnet_ext.federated.plan import PlanError, targeted_plan

    info = e_branchformer_info
    fusion, norms = "encoder.encoders.0.depthwise_conv_fusion", "encoder.encoders.0.norms"
    with pytest.raises(PlanError) as e:
        targeted_plan(info, _importance(info, {fusion, norms}), 0.5, source="scan.tsv")
    assert str(e.value) == (
        "the scan labels 2 groups ambient (scan.tsv), but none has droppable units of kinds "
        f"ff, heads, conv, cgmlp, merge: {fusion}, {norms}; nothing to drop in a targeted plan: "
        "allow more unit kinds (--unit_kinds), scan at block granularity, or use the scaled mode")
    with pytest.raises(PlanError, match="labels no group ambient .*relax the ambient threshold"):
        targeted_plan(info, _importance(info, set()), 0.5, source="scan.tsv")
    # Some droppable, some not: the plan drops what it can and says what it sends whole.
    with caplog.at_level("WARNING"):
        plan = targeted_plan(info, _importance(info, {fusion, "encoder.encoders.0.cgmlp"}), 0.5,
                             source="scan.tsv")
    assert dict(plan.group_rates) == {"encoder.encoders.0.cgmlp": 0.5}
    assert f"1 ambient groups have no droppable units of kinds ff, heads, conv, cgmlp, merge and " \
           f"are sent whole: {fusion}" in caplog.text
    assert plan.note.endswith(f"ambient but sent whole (no droppable units): {fusion}")
    # Without cgMLP units the cgMLP group is one of them.
    with pytest.raises(PlanError, match="none has droppable units of kinds ff, heads"):
        targeted_plan(info, _importance(info, {"encoder.encoders.0.cgmlp"}), 0.5,
                      unit_kinds=("ff", "heads"), source="scan.tsv")


# -- recipes --------------------------------------------------------------------------------------

def test_stability_study_takes_the_e_branchformer_config(tmp_path):
    """run_stability.sh adds configs to its Conformer list (--add_configs) and refuses missing files."""
    import shutil
    import subprocess

    recipe = SYNTH_CONF.parent
    work = tmp_path / "egs2" / "synth_en" / "asr1"
    (work / "conf").mkdir(parents=True)
    # The script sources the stage driver's common.sh from egs2/TEMPLATE, as in the repository.
    (tmp_path / "egs2" / "TEMPLATE").symlink_to(recipe.parents[1] / "TEMPLATE")
    shutil.copy(recipe / "run_stability.sh", work)
    shutil.copy(SYNTH_CONF / "train_asr_e_branchformer.yaml", work / "conf")
    (work / "run.sh").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')  # records its arguments
    (work / "run.sh").chmod(0o755)

    def run(*args):
        return subprocess.run(["bash", "run_stability.sh", *args], cwd=work, capture_output=True,
                              text=True, timeout=60)

    proc = run("--add_configs", "conf/train_asr_e_branchformer.yaml", "--stage", "4")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "--asr_configs",
        "conf/train_asr_conformer.yaml conf/train_asr_conformer_gn.yaml conf/train_asr_conformer_small.yaml "
        "conf/train_asr_conformer_gn_small.yaml conf/train_asr_e_branchformer.yaml",
        "--seeds", "1 2 3", "--stop_stage", "7", "--stage", "4"]
    proc = run("--add_configs", "conf/train_asr_branchformer.yaml")
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"--add_configs: no config file conf/train_asr_branchformer.yaml (relative to {work})" in proc.stderr
