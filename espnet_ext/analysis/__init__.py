"""Analyses across layer-reset scans and training runs: labels per run, weight updates, stability
across seeds, norms and sizes.

Modules: `layer_analysis` (one run's labels over taus and its weight updates;
``python -m espnet_ext.bin.layer_analysis``), `cross_run` (collecting several runs' scans),
`stability` (agreement across runs), `weight_updates` (update size per layer), `analysis_report`
(its tables and JSON), `depth` (the depth sweep: ambient groups vs encoder depth;
``layer_analysis depth``).
"""
