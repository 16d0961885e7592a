"""Speech data: Kaldi data dirs (read, write, subset, combine, import, validate), LibriSpeech
preparation and the synthetic default corpus.

Modules: `kaldi` (data dir I/O), `validate` (checks with clear errors), `audio_rate` (a data dir's
sample rate against the one a model's front end expects), `combine` (several dirs
into one), `import_dirs` (a user's existing dirs into a recipe), `librispeech` (Kaldi dirs from an
extracted LibriSpeech tree), `sentences` (WordNet transcripts), `voices` (synthetic speakers),
`tts` (Debian TTS engines), `render` (sox effects, noise, FLAC), `synth_corpus` (the corpus
builder).
"""
