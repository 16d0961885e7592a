"""ESPnet ASR decoding (`espnet2.bin.asr_inference`) with espnet_ext's encoders registered.

Same options as `python -m espnet2.bin.asr_inference`; use it for models whose config names an
espnet_ext encoder (plain ESPnet rejects them with "--encoder must be one of ..."). Before
decoding, the audio of every `sound` input is checked against the sample rate of the model's
front end (headers only). Bad input (audio at another rate, a config ESPnet cannot build a model
from) ends in one `asr_inference: error: ...` line and exit status 1; `ESPNET_EXT_DEBUG=1` shows
the full traceback.
"""

from __future__ import annotations

import sys

from espnet_ext.asr.registration import register_encoders
from espnet_ext.bin.cli import run_guarded
from espnet_ext.data.kaldi import DataDirError
from espnet_ext.evaluation.inference_inputs import check_decoding_audio, decoding_config


def main(cmd=None) -> int:
    """Parses ESPnet's options, checks the inputs, decodes; returns the exit status."""
    from espnet2.bin.asr_inference import get_parser, inference
    from espnet.utils.cli_utils import get_commandline_args

    register_encoders()
    print(get_commandline_args(), file=sys.stderr)
    args = get_parser().parse_args(cmd)

    def run():
        check_decoding_audio(args.data_path_and_name_and_type,
                             decoding_config(args.asr_train_config, args.asr_model_file),
                             args.key_file)
        kwargs = vars(args)
        kwargs.pop("config", None)
        inference(**kwargs)

    return run_guarded("asr_inference", run, errors=(DataDirError,))


if __name__ == "__main__":
    sys.exit(main())
