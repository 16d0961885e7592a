"""ESPnet ASR decoding (`espnet2.bin.asr_inference`) with espnet_ext's encoders registered.

Same options as `python -m espnet2.bin.asr_inference`; use it for models whose config names an
espnet_ext encoder (plain ESPnet rejects them with "--encoder must be one of ...").
"""

import espnet_ext  # noqa: F401  (registers espnet_ext's encoders into ESPnet)
from espnet2.bin.asr_inference import main

if __name__ == "__main__":
    main()
