"""espnet_ext: layer importance (ambient/critical layers) and federated dropout for ESPnet ASR.

Importing this package (it imports nothing heavy itself) installs one import hook
(:mod:`espnet_ext.asr.import_hook`) that acts on two modules, whoever imports them later in the
process:

* ``espnet2.tasks.asr``: right after it is imported (or at once, if it already is), espnet_ext's
  encoders (e.g. ``encoder: norm_conformer``) are registered into ESPnet's ASR task, so tools
  that never touch ESPnet's ASR task stay fast to start;
* ``g2p_en`` (imported by every ESPnet tool through ``espnet2.text.phoneme_tokenizer``): while
  it is imported, ``nltk.download`` does nothing, so a missing tagger or CMUdict is neither
  fetched into ``~/nltk_data`` nor reported with eight lines of download errors on stderr.
  Only that import is affected; ``nltk.download`` works again right after it. Phoneme tokens
  (``--g2p g2p_en``) still need the two NLTK resources installed beforehand:
  ``python -m nltk.downloader averaged_perceptron_tagger_eng cmudict``.

ESPnet's own entry points (``python -m espnet2.bin.asr_train`` ...) never import this package;
``python -m espnet_ext.bin.install_hook`` makes every Python process of an environment do it
(see :mod:`espnet_ext.asr.registration`). Code that needs the encoders in ESPnet's choices
calls :func:`espnet_ext.asr.registration.register_encoders` itself (the entry points do).
"""

from __future__ import annotations

from espnet_ext.asr.import_hook import install_import_hook

install_import_hook()
