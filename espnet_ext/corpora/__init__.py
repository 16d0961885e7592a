"""Corpora the recipes prepare: LibriSpeech from an extracted tree, and the synthetic default corpus.

Modules: `librispeech` (Kaldi dirs from an extracted LibriSpeech tree), `synth_corpus` (the corpus
builder), `sentences` (WordNet transcripts), `voices` (synthetic speakers), `tts` (Debian TTS
engines), `render` (sox effects, noise, FLAC).
"""
