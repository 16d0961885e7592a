"""ESPnet ASR decoding (`espnet2.bin.asr_inference`) with espnet_ext's encoders registered.

Same options as `python -m espnet2.bin.asr_inference`; use it for models whose config names an
espnet_ext encoder (plain ESPnet rejects them with "--encoder must be one of ..."). Before
decoding, the audio of every `sound` input is checked against the sample rate of the model's
front end (headers only). Bad input (audio at another rate, a config ESPnet cannot build a model
from) ends in one `asr_inference: error: ...` line and exit status 1; `ESPNET_EXT_DEBUG=1` shows
the full traceback.
"""

import sys
from pathlib import Path
from typing import Optional

import espnet_ext  # noqa: F401  (registers espnet_ext's encoders into ESPnet)
from espnet_ext.bin.cli import run_guarded
from espnet_ext.data.kaldi import DataDirError


def model_config_of(args) -> Optional[Path]:
    """The training config ESPnet decodes with: --asr_train_config, else the config.yaml next to
    --asr_model_file (ESPnet's own rule); None with --model_tag only."""
    if args.asr_train_config:
        return Path(args.asr_train_config)
    if args.asr_model_file:
        return Path(args.asr_model_file).parent / "config.yaml"
    return None


def check_inputs(args) -> None:
    """Checks the audio of each `sound` input (only the --key_file recordings, when given)
    against the model's front-end sample rate.

    Raises:
        SampleRateError: Audio at another rate (names the data dir, both rates, the fix).
        DataDirError: Unreadable audio.
    """
    from espnet_ext.data.audio import check_sample_rate
    from espnet_ext.data.kaldi import read_kaldi_map

    config = model_config_of(args)
    if config is None or not config.is_file():
        return  # ESPnet reports a missing config itself
    keys = None
    if args.key_file:
        keys = read_kaldi_map(Path(args.key_file), allow_empty_value=True).keys()
    for path, _name, kind in args.data_path_and_name_and_type:
        if kind == "sound":
            check_sample_rate(Path(path), config, keys=keys)


def main(cmd=None) -> int:
    """Parses ESPnet's options, checks the inputs, decodes; returns the exit status."""
    from espnet2.bin.asr_inference import get_parser, inference
    from espnet.utils.cli_utils import get_commandline_args

    print(get_commandline_args(), file=sys.stderr)
    args = get_parser().parse_args(cmd)

    def run():
        check_inputs(args)
        kwargs = vars(args)
        kwargs.pop("config", None)
        inference(**kwargs)

    return run_guarded("asr_inference", run, errors=(DataDirError,))


if __name__ == "__main__":
    sys.exit(main())
