"""The layer-reset scan: reset each layer of a trained model and measure the error.

Modules: `scanner` (:func:`run_scan`, entry point ``python -m espnet_ext.bin.layer_scan``),
`labels` (the ambient/critical rule), `result` (a scan dir: scan.tsv rows, scan.json, the
reference reset), `utt_errors` (per-utterance counts, intervals, whether a variant is
settled), `report` (scan.md, the summary line and the heatmaps).
"""
