"""Checks of the inputs of ESPnet's decoding (``espnet2.bin.asr_inference``) before it starts:
the audio of every ``sound`` input must be at the sample rate of the model's front end."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

PathLike = Union[str, Path]


def decoding_config(asr_train_config: Optional[PathLike],
                    asr_model_file: Optional[PathLike]) -> Optional[Path]:
    """The training config ESPnet decodes with: `asr_train_config`, else the ``config.yaml``
    next to `asr_model_file` (ESPnet's own rule); None when neither is given (``--model_tag``)."""
    if asr_train_config:
        return Path(asr_train_config)
    if asr_model_file:
        return Path(asr_model_file).parent / "config.yaml"
    return None


def check_decoding_audio(inputs: Iterable[Sequence[str]], config: Optional[Path],
                         key_file: Optional[PathLike] = None) -> None:
    """Checks the audio of each ``sound`` input (headers only) against the model's front-end
    sample rate.

    Args:
        inputs: ESPnet's ``--data_path_and_name_and_type`` triples (path, name, type).
        config: The training config (:func:`decoding_config`); nothing is checked when it is
            None or missing (ESPnet reports a missing config itself).
        key_file: ESPnet's ``--key_file``: only the recordings it lists are checked.

    Raises:
        SampleRateError: Audio at another rate (names the data dir, both rates, the fix).
        DataDirError: Unreadable audio.
    """
    from espnet_ext.data.audio import check_sample_rate
    from espnet_ext.data.kaldi import read_kaldi_map

    if config is None or not config.is_file():
        return
    keys = None
    if key_file:
        keys = read_kaldi_map(Path(key_file), allow_empty_value=True).keys()
    for path, _name, kind in inputs:
        if kind == "sound":
            check_sample_rate(Path(path), config, keys=keys)
