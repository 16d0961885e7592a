"""Layer maps: which state-dict entries form each layer group, at each granularity."""

import pytest
import torch

from helpers import build_tiny_model

asr = pytest.importorskip("espnet2.tasks.asr")

from espnet_ext.layers import LayerMapError, build_layer_map  # noqa: E402


def _build(tmp_path, encoder="conformer", **encoder_conf):
    return build_tiny_model(tmp_path, encoder, **encoder_conf)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("layer_map"))


def _assert_disjoint(layer_map):
    seen = {}
    for g in layer_map:
        for k in g.keys:
            assert k not in seen, f"{k} is in {seen.get(k)} and {g.name}"
            seen[k] = g.name
    return set(seen)


def test_block_groups_in_forward_order_cover_every_parameter(model):
    m = build_layer_map(model, "block")
    assert m.names() == [
        "encoder.embed", "encoder.encoders.0", "encoder.encoders.1", "encoder.after_norm", "ctc",
        "decoder.embed", "decoder.decoders.0", "decoder.after_norm", "decoder.output_layer",
    ]
    covered = _assert_disjoint(m)
    params = {n for n, _ in model.named_parameters()}
    assert params <= covered
    # Only fixed buffers stay outside the groups.
    assert set(m.unassigned) == set(model.state_dict()) - covered == {"frontend.logmel.melmat"}
    assert m.num_blocks == {"encoder": 2, "decoder": 1}
    b1 = m["encoder.encoders.1"]
    assert (b1.kind, b1.stack, b1.block, b1.depth) == ("enc_block", "encoder", 1, 0.5)
    assert m["ctc"].kind == "ctc" and m["ctc"].block is None and m["ctc"].depth is None
    assert m["decoder.decoders.0"].kind == "dec_block"
    assert b1.numel == sum(p.numel() for n, p in model.named_parameters()
                           if n.startswith("encoder.encoders.1."))
    # A reset must bring batch-norm statistics along with the weights they belong to.
    assert set(b1.buffer_keys) == {f"encoder.encoders.1.conv_module.norm.{b}"
                                   for b in ("running_mean", "running_var", "num_batches_tracked")}


def test_submodule_groups_split_blocks_and_gather_norms(model):
    m = build_layer_map(model, "submodule")
    block0 = [n for n in m.names() if n.startswith("encoder.encoders.0.")]
    assert block0 == [f"encoder.encoders.0.{s}" for s in
                      ("feed_forward_macaron", "self_attn", "conv_module", "feed_forward", "norms")]
    norms = m["encoder.encoders.0.norms"]
    assert norms.kind == "enc_norms"
    assert {k.rsplit(".", 2)[1] for k in norms.keys} == {
        "norm_ff", "norm_mha", "norm_ff_macaron", "norm_conv", "norm_final"}
    conv = m["encoder.encoders.0.conv_module"]
    assert "encoder.encoders.0.conv_module.norm.running_var" in conv.keys  # BN stays in conv_module
    assert "encoder.encoders.0.self_attn.pos_bias_u" in m["encoder.encoders.0.self_attn"].keys
    dec = [n for n in m.names() if n.startswith("decoder.decoders.0.")]
    assert dec == [f"decoder.decoders.0.{s}" for s in ("self_attn", "src_attn", "feed_forward", "norms")]
    # Same entries as the block map, only split finer.
    assert _assert_disjoint(m) == _assert_disjoint(build_layer_map(model, "block"))


def test_frontend_granularity_is_the_input_side_only(model):
    m = build_layer_map(model, "frontend")
    assert m.names() == ["encoder.embed", "decoder.embed"]
    assert all(k.startswith("encoder.embed.") for k in m["encoder.embed"].keys)


def test_state_dict_key_names_alone_give_the_same_map(model):
    for granularity in ("block", "submodule", "frontend"):
        from_model = build_layer_map(model, granularity)
        from_state = build_layer_map(model.state_dict(), granularity)
        assert [(g.name, g.keys, g.param_keys, g.numel) for g in from_model] == \
               [(g.name, g.keys, g.param_keys, g.numel) for g in from_state]


def test_pattern_groups_split_by_captures_only(model):
    per_block = build_layer_map(model, "pattern", r"encoder\.encoders\.(\d+)\.conv_module")
    assert per_block.names() == ["encoder.encoders.0.conv_module", "encoder.encoders.1.conv_module"]
    assert [g.block for g in per_block] == [0, 1]
    together = build_layer_map(model, "pattern", r"encoder\.encoders\.\d+\.conv_module")
    assert len(together) == 1 and together.groups[0].block is None
    assert set(together.groups[0].keys) == {k for g in per_block for k in g.keys}
    one = build_layer_map(model, "pattern", r"encoder\.encoders\.1\.")
    assert one.names() == ["encoder.encoders.1"]
    assert one["encoder.encoders.1"].keys == build_layer_map(model, "block")["encoder.encoders.1"].keys
    # A key matched by two patterns belongs to the first.
    both = build_layer_map(model, "pattern", [r"ctc\.ctc_lo\.weight", r"ctc"])
    assert both.names() == ["ctc.ctc_lo.weight", "ctc"]
    assert both["ctc"].keys == ("ctc.ctc_lo.bias",)


def test_bad_granularity_and_patterns_fail_clearly(model):
    with pytest.raises(LayerMapError,
                       match="unknown granularity 'layers'.*block, submodule, frontend, pattern"):
        build_layer_map(model, "layers")
    with pytest.raises(LayerMapError, match=r"pattern 'encoder\\\.blocks' matches no state-dict key"):
        build_layer_map(model, "pattern", r"encoder\.blocks")
    with pytest.raises(LayerMapError, match="invalid layer pattern"):
        build_layer_map(model, "pattern", "encoder.(")
    with pytest.raises(LayerMapError, match="needs at least one regular expression"):
        build_layer_map(model, "pattern")


def test_group_norm_conformer_has_no_running_statistics(tmp_path):
    m = build_layer_map(_build(tmp_path, "norm_conformer", conv_norm_type="group_norm"), "submodule")
    conv = m["encoder.encoders.0.conv_module"]
    assert conv.buffer_keys == ()
    assert "encoder.encoders.0.conv_module.norm.weight" in conv.param_keys


def test_conformer_kinds_are_those_of_committed_results(tmp_path):
    """Kinds are shared across encoder families, but a Conformer's are still the names that
    committed results (and scans written before) carry, so old and new runs line up."""
    import csv
    from pathlib import Path

    from helpers import write_char_token_list

    recipe = Path(__file__).resolve().parents[2] / "egs2" / "synth_en" / "asr1"
    from espnet_ext.experiment.training import CheckpointKeepingASRTask  # parses the cpu_* keys

    args = CheckpointKeepingASRTask.get_parser().parse_args(
        ["--config", str(recipe / "conf" / "train_asr_conformer.yaml"), "--token_type", "char",
         "--token_list", str(write_char_token_list(tmp_path / "tokens.txt"))])
    with torch.device("meta"):
        state = asr.ASRTask.build_model(args).state_dict()
    for granularity in ("block", "submodule"):
        path = recipe / "results" / f"stability_{granularity}_weight_updates.tsv"
        with open(path, newline="") as f:
            committed = {r["group"]: r["kind"] for r in csv.DictReader(f, delimiter="\t")
                         if r["run"] == "asr_train_asr_conformer_seed1"}
        now = {g.name: g.kind for g in build_layer_map(state, granularity)}
        assert committed and committed == {g: now[g] for g in committed}, granularity
