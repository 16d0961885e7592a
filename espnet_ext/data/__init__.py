"""Speech data: Kaldi data dirs (read, write, subset, validate) and the synthetic default corpus.

Modules: `kaldi` (data dir I/O), `validate` (checks with clear errors), `sentences` (WordNet
transcripts), `voices` (synthetic speakers), `tts` (Debian TTS engines), `render` (sox effects,
noise, FLAC), `synth_corpus` (the corpus builder).
"""
