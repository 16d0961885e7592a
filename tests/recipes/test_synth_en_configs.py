"""The stability study's small configs differ from the configs of that study's time (now
conf/tuning/*_fp32.yaml) only in model size; the depth sweep's from the small ones only in
depth (and CPU bf16 autocast)."""

from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parents[2] / "egs2" / "synth_en" / "asr1" / "conf"
SIZE_KEYS = {"output_size", "linear_units", "num_blocks", "conv_norm_groups"}


def _without_size(conf: dict) -> dict:
    out = dict(conf)
    for section in ("encoder_conf", "decoder_conf"):
        out[section] = {k: v for k, v in conf[section].items() if k not in SIZE_KEYS}
    return out


def test_small_configs_change_only_the_size():
    for default, small in (("tuning/train_asr_conformer_fp32.yaml", "train_asr_conformer_small.yaml"),
                           ("tuning/train_asr_conformer_gn_fp32.yaml", "train_asr_conformer_gn_small.yaml")):
        d = yaml.safe_load((CONF / default).read_text())
        s = yaml.safe_load((CONF / small).read_text())
        assert _without_size(d) == _without_size(s), small
        assert (s["encoder_conf"]["num_blocks"], s["encoder_conf"]["output_size"]) == (6, 64)
        assert (d["encoder_conf"]["num_blocks"], d["encoder_conf"]["output_size"]) == (4, 96)


def test_depth_configs_change_only_the_depth_learning_rate_and_cpu_options_of_the_small_ones():
    for norm in ("", "_gn"):
        small = yaml.safe_load((CONF / f"train_asr_conformer{norm}_small.yaml").read_text())
        for blocks in (4, 8, 12, 16):
            d = yaml.safe_load((CONF / "depth" / f"train_asr_conformer{norm}_{blocks}x64.yaml").read_text())
            options = {k: d.pop(k) for k in ("cpu_autocast", "cpu_dropout", "cpu_channels_last")}
            assert options == {"cpu_autocast": "bf16", "cpu_dropout": "fast", "cpu_channels_last": True}
            assert d["encoder_conf"].pop("num_blocks") == blocks
            # One peak learning rate for every depth, lower than the small ones' (deep runs stalled).
            assert (small["optim_conf"]["lr"], d["optim_conf"]["lr"]) == (0.005, 0.002)
            expected = dict(small, encoder_conf={k: v for k, v in small["encoder_conf"].items() if k != "num_blocks"},
                            optim_conf=dict(small["optim_conf"], lr=0.002))
            assert d == expected, (norm, blocks)


def test_default_configs_are_the_float32_ones_with_the_cpu_training_options_and_17_epochs():
    for n in ("", "_gn"):
        d = yaml.safe_load((CONF / f"train_asr_conformer{n}.yaml").read_text())
        fp32 = yaml.safe_load((CONF / "tuning" / f"train_asr_conformer{n}_fp32.yaml").read_text())
        options = {k: d.pop(k) for k in ("cpu_autocast", "cpu_dropout", "cpu_channels_last")}
        assert options == {"cpu_autocast": "bf16", "cpu_dropout": "fast", "cpu_channels_last": True}
        # The same schedule stopped at epoch 17 (the float32 runs of RESULTS.md trained 20).
        assert (d.pop("max_epoch"), fp32.pop("max_epoch")) == (17, 20)
        assert d == fp32
