"""The data layer: Kaldi data dirs (read, write, subset, combine, import, validate) and audio.

Modules: `kaldi` (data dir I/O), `validate` (checks with clear errors), `audio` (a data dir's
audio: sample rate against the one a model's front end expects), `combine` (several dirs into
one), `import_dirs` (a user's existing dirs into a recipe), `outdir` (the marker rule for dirs the
tools write). The corpora built from it live in :mod:`espnet_ext.corpora`.
"""
