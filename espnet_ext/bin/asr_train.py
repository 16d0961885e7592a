"""ESPnet ASR training that keeps checkpoint 0 and every epoch's weights.

Same options as `python -m espnet2.bin.asr_train`; the encoders of espnet_ext are registered.
Writes `<output_dir>/checkpoints/{0,1,...,N}epoch.pth` besides ESPnet's usual outputs.
"""

import espnet_ext  # noqa: F401  (registers espnet_ext's encoders into ESPnet)
from espnet_ext.training import CheckpointKeepingASRTask


def main(cmd=None):
    CheckpointKeepingASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
