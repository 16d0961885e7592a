"""ESPnet ASR training that keeps checkpoint 0 and every epoch's weights.

Same options as `python -m espnet2.bin.asr_train`; the encoders of espnet_ext are registered.
Writes `<output_dir>/checkpoints/{0,1,...,N}epoch.pth` besides ESPnet's usual outputs.
A config that ESPnet cannot build a model from (unknown encoder, bad encoder options) ends in one
line naming the config file and exit status 1; `ESPNET_EXT_DEBUG=1` shows the full traceback.
"""

from __future__ import annotations

import sys

from espnet_ext.asr.registration import register_encoders
from espnet_ext.bin.cli import run_guarded
from espnet_ext.experiment.training import CheckpointKeepingASRTask


def main(cmd=None) -> int:
    """Runs ESPnet's training; returns the exit status (1: the model config cannot be built)."""
    register_encoders()
    return run_guarded("asr_train", lambda: CheckpointKeepingASRTask.main(cmd=cmd))


if __name__ == "__main__":
    sys.exit(main())
