"""Checkpoint 0 of a stock ESPnet training, rebuilt from its config.yaml, is bit-identical to the
one espnet_ext's training saves for the same config and seed.

Tiny models (2 blocks x 16 dim, 6 utterances, 1 epoch) are trained twice per config: by stock
ESPnet (``espnet2.bin.asr_train``'s ``main``, in a subprocess of its own) and by
``espnet_ext.bin.asr_train`` (in-process), which saves ``checkpoints/0epoch.pth``.
"""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from helpers import make_tone_data_dir, tiny_asr_config, train_args, write_char_token_list

pytest.importorskip("espnet2.tasks.asr")

CONFIGS = {
    "default_init": {},
    "xavier_uniform": {"init": "xavier_uniform"},
    "specaug": {"specaug": "specaug",
                "specaug_conf": {"apply_time_warp": True, "time_warp_window": 2,
                                 "apply_freq_mask": True, "freq_mask_width_range": [0, 4],
                                 "num_freq_mask": 1, "apply_time_mask": True,
                                 "time_mask_width_range": [0, 5], "num_time_mask": 1}},
    # The encoder of another tiny model (the default_init run's epoch 1) as pre-trained weights.
    "init_param": {"init_param": ["{root}/stock/default_init/1epoch.pth:encoder:encoder"]},
}


def _stock_train(cmds):
    """Train with stock ESPnet's entry point in a fresh interpreter (the project's trainer unused)."""
    script = ("import sys, json\nimport torch\ntorch.set_num_threads(1)\n"
              "from espnet2.bin.asr_train import main\n"
              "for cmd in json.loads(sys.argv[1]):\n    main(cmd=cmd)\n"
              "assert 'espnet_ext.experiment.training' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", script, json.dumps(cmds)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{config name: (stock exp dir, espnet_ext exp dir)}, each trained 1 epoch with seed 3."""
    from espnet_ext.experiment.training import CheckpointKeepingASRTask

    root = tmp_path_factory.mktemp("reconstruct")
    train = make_tone_data_dir(root / "data", "train", n_utts=6, seed=0)
    valid = make_tone_data_dir(root / "data", "valid", n_utts=3, seed=1)
    tokens = write_char_token_list(root / "tokens.txt")
    cmds, out = [], {}
    for name, extra in CONFIGS.items():
        config = tiny_asr_config()
        config.update(yaml.safe_load(yaml.safe_dump(extra).replace("{root}", str(root))))
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        stock, ext = root / "stock" / name, root / "ext" / name
        cmds.append(train_args(train, valid, tokens, path, stock, max_epoch=1))
        out[name] = (stock, ext, train_args(train, valid, tokens, path, ext, max_epoch=1))
    _stock_train(cmds)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, (_, _, cmd) in out.items():
            CheckpointKeepingASRTask.main(cmd=cmd)
    finally:
        torch.set_num_threads(threads)
    return {name: (stock, ext) for name, (stock, ext, _) in out.items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_reconstruction_of_a_stock_run_is_bit_identical_to_saved_checkpoint0(runs, name):
    from espnet_ext.experiment.experiment_dir import ExperimentDir

    stock, ext = runs[name]
    assert not (stock / "checkpoints").exists()  # stock ESPnet keeps no initial weights
    before = sorted(p.name for p in stock.iterdir())
    exp = ExperimentDir(stock)
    assert exp.available_taus() == [0, 1]
    path, reconstructed = exp.initial_weights_file()
    assert reconstructed and path == stock / "checkpoints" / "0epoch.reconstructed.pth"
    # Only clearly named new files were written into the user's exp dir.
    assert sorted(p.name for p in stock.iterdir()) == sorted(before + ["checkpoints"])
    assert sorted(p.name for p in (stock / "checkpoints").iterdir()) == [
        "0epoch.reconstructed.json", "0epoch.reconstructed.pth"]

    rebuilt = torch.load(path, weights_only=True)
    saved = torch.load(ext / "checkpoints" / "0epoch.pth", weights_only=True)
    assert rebuilt.keys() == saved.keys() and len(saved) > 100
    for k in saved:
        assert rebuilt[k].dtype == saved[k].dtype, k
        assert torch.equal(rebuilt[k], saved[k]), f"{name}: {k} differs"

    record = json.loads((stock / "checkpoints" / "0epoch.reconstructed.json").read_text())
    saved_record = json.loads((ext / "checkpoints" / "0epoch.json").read_text())
    assert record["reconstructed"] is True and saved_record["reconstructed"] is False
    assert record["seed"] == saved_record["seed"] == 3
    assert record["config_sha256"] == saved_record["config_sha256"]
    assert set(record["versions"]) == {"torch", "espnet", "espnet_ext"}
    # Asked again: the stored reconstruction is reused, not rebuilt.
    mtime = path.stat().st_mtime_ns
    assert ExperimentDir(stock).initial_weights_file() == (path, True)
    assert path.stat().st_mtime_ns == mtime


def test_init_param_is_part_of_checkpoint0(runs):
    """Without loading init_param, the rebuilt model differs exactly where the file applies."""
    import argparse

    from espnet_ext.layers.reset import InitialWeightSampler

    stock, ext = runs["init_param"]
    config = yaml.safe_load((stock / "config.yaml").read_text())
    saved = torch.load(ext / "checkpoints" / "0epoch.pth", weights_only=True)
    bare = InitialWeightSampler.from_train_args(argparse.Namespace(**config),
                                                apply_init_param=False).sample(3)
    differ = {k for k in saved if not torch.equal(saved[k], bare[k])}
    assert differ and all(k.startswith("encoder.") for k in differ)
    # The sampler of the scan's re-randomization applies it: its training-seed sample is checkpoint 0.
    full = InitialWeightSampler.from_train_args(config).sample(3)
    assert all(torch.equal(full[k], saved[k]) for k in saved)
