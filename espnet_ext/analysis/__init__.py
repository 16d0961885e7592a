"""Analyses of trained models: the layer-reset scan (ambient/critical layers).

Entry point: :func:`espnet_ext.analysis.scan.run_scan` (CLI: ``python -m espnet_ext.bin.layer_scan``).
Modules: ``eval_data`` (data in memory), ``encoder_stages`` (staged forward), ``evaluator``
(features and prefix cache), ``ctc_greedy``/``decoders`` (scoring modes), ``experiment``
(experiment dir, checkpoints), ``labels`` (ambient rule), ``scan_report`` (outputs).
"""
