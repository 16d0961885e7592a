"""Command-line entry points: `python -m espnet_ext.bin.<tool>`.

Each parses its options and calls the library; `cli` is the one CLI layer they share (logging,
one-line errors, exit code 1 on bad input, list arguments).
"""
