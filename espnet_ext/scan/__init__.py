"""The layer-reset scan: reset each layer of a trained model and measure the error.

Modules: `scanner` (:func:`run_scan`, entry point ``python -m espnet_ext.bin.layer_scan``),
`labels` (the ambient/critical rule), `report` (scan.tsv/scan.md/scan.json and the heatmap).
"""
