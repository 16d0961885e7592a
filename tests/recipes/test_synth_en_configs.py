"""The stability study's small configs differ from the defaults only in model size."""

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
    for default, small in (("train_asr_conformer.yaml", "train_asr_conformer_small.yaml"),
                           ("train_asr_conformer_gn.yaml", "train_asr_conformer_gn_small.yaml")):
        d = yaml.safe_load((CONF / default).read_text())
        s = yaml.safe_load((CONF / small).read_text())
        assert _without_size(d) == _without_size(s), small
        assert (s["encoder_conf"]["num_blocks"], s["encoder_conf"]["output_size"]) == (6, 64)
        assert (d["encoder_conf"]["num_blocks"], d["encoder_conf"]["output_size"]) == (4, 96)
