"""Checks before ESPnet's own decoding (espnet_ext.evaluation.inference_inputs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import make_tone_data_dir
from espnet_ext.data.audio import SampleRateError
from espnet_ext.evaluation.inference_inputs import check_decoding_audio, decoding_config


def test_decoding_config_follows_espnets_rule():
    assert decoding_config("conf/train.yaml", "exp/a/model.pth") == Path("conf/train.yaml")
    assert decoding_config(None, "exp/a/model.pth") == Path("exp/a/config.yaml")
    assert decoding_config(None, None) is None  # --model_tag only


def test_sound_inputs_are_checked_against_the_front_end_rate(tmp_path):
    data = make_tone_data_dir(tmp_path, "dev", n_utts=2)  # 16 kHz
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"frontend_conf": {"fs": 16000}}))
    inputs = [(str(data / "wav.scp"), "speech", "sound"), (str(data / "text"), "text", "text")]
    check_decoding_audio(inputs, config)
    check_decoding_audio(inputs, tmp_path / "missing.yaml")  # ESPnet reports that itself
    check_decoding_audio(inputs, None)
    config.write_text(yaml.safe_dump({"frontend_conf": {"fs": 8000}}))
    with pytest.raises(SampleRateError):
        check_decoding_audio(inputs, config)
    # Only the recordings of --key_file are read.
    key_file = tmp_path / "keys"
    key_file.write_text("")
    check_decoding_audio(inputs, config, key_file)
