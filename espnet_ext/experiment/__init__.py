"""The experiment directory of a trained ESPnet ASR model, and how a training run fills it.

Modules: `experiment_dir` (:class:`ExperimentDir`: config, model files, checkpoints by tau, result
dirs, building the model; one error type), `checkpoints` (where each epoch's weights live and which
run checkpoint 0 belongs to), `packed_model` (ESPnet's packed archives and model dirs),
`training` (ESPnet's trainer, keeping the initial and every epoch's weights), `scan_taus` (the
epochs a scan resets to, checked against the configs before training).
"""
