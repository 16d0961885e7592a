"""The data layer: Kaldi data dirs (read, write, subset, combine, import, validate) and audio.

Modules: `kaldi` (data dir I/O), `validate` (checks with clear errors), `audio` (a data dir's
audio: what a wav.scp entry is, reading it, its header and sample rate), `combine` (several dirs into
one), `import_dirs` (a user's existing dirs into a recipe), `outdir` (the marker rule for dirs the
tools write). The corpora built from it live in :mod:`espnet_ext.corpora`.
"""
