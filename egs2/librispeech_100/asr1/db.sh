# Where the LibriSpeech corpus is: the folder that holds LibriSpeech/ (as extracted from the
# openslr.org/12 archives: ${LIBRISPEECH}/LibriSpeech/train-clean-100, ...).
# An environment variable LIBRISPEECH overrides the default; so does local/data.sh --librispeech_dir.
LIBRISPEECH=${LIBRISPEECH:-downloads}
