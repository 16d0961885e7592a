"""Command-line entry points: `python -m espnet_ext.bin.<tool>`."""
