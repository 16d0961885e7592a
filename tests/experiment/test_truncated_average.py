"""The model a shorter training would have ended with (``average_epochs``): ESPnet's own n-best
average over epochs 1..N of a longer run."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from helpers import train_args

pytest.importorskip("espnet2.tasks.asr")


@pytest.fixture
def trained(tiny_asr_setup, tmp_path, one_thread):
    """A tiny run of 3 epochs that ends with ESPnet's average of its 2 best by valid loss."""
    from espnet_ext.experiment.training import CheckpointKeepingASRTask

    train, valid, tokens, config = tiny_asr_setup
    conf = yaml.safe_load(config.read_text())
    conf["keep_nbest_models"] = 2
    config.write_text(yaml.safe_dump(conf))
    out = tmp_path / "exp"
    CheckpointKeepingASRTask.main(cmd=train_args(train, valid, tokens, config, out, max_epoch=3))
    return out


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_average_up_to_the_last_epoch_is_what_espnet_wrote(trained):
    from espnet_ext.experiment.experiment_dir import ExperimentDir
    from espnet_ext.experiment.truncated_average import truncated_average

    avg = truncated_average(trained, 3)
    assert avg.path == trained / "valid.loss.ave_upto3.pth"
    assert avg.criterion == ("valid", "loss", "min") and len(avg.epochs) == 2
    assert _equal(_load(avg.path), _load(trained / "valid.loss.ave.pth"))
    # Epochs 1..2, the best one: that epoch's own weights (the reporter's lowest valid loss).
    stats = ExperimentDir(trained).epoch_stats()
    best = min((1, 2), key=lambda e: stats[e]["valid"]["loss"])
    one = truncated_average(trained, 2, nbest=1)
    assert one.epochs == [(best, pytest.approx(stats[best]["valid"]["loss"]))]
    assert _equal(_load(one.path), _load(trained / "checkpoints" / f"{best}epoch.pth"))
    record = json.loads((trained / "valid.loss.ave_upto2.json").read_text())
    assert record["last_epoch"] == 2 and [e["epoch"] for e in record["epochs"]] == [best]
    # Running it again replaces its own file.
    assert truncated_average(trained, 2, nbest=1).path == one.path


def test_refusals(trained, tmp_path):
    from espnet_ext.experiment.experiment_dir import ExperimentError
    from espnet_ext.experiment.truncated_average import truncated_average

    with pytest.raises(ExperimentError, match="outside the trained epochs 1..3"):
        truncated_average(trained, 4)
    with pytest.raises(ExperimentError, match="no valid.bleu"):
        truncated_average(trained, 3, criterion=("valid", "bleu", "max"))
    with pytest.raises(ExperimentError, match="criterion must be"):
        truncated_average(trained, 3, criterion=("valid", "loss", "lowest"))
    (trained / "valid.loss.ave_upto1.pth").write_bytes(b"someone else's")
    with pytest.raises(ExperimentError, match="was not written by this tool"):
        truncated_average(trained, 1)
    assert (trained / "valid.loss.ave_upto1.pth").read_bytes() == b"someone else's"
    (trained / "checkpoints" / "2epoch.pth").unlink()
    (trained / "2epoch.pth").unlink(missing_ok=True)
    with pytest.raises(ExperimentError, match="not kept"):
        truncated_average(trained, 2, nbest=2)
    with pytest.raises(ExperimentError, match="is not a trained ESPnet experiment dir"):
        truncated_average(tmp_path / "nothing", 1)
    (tmp_path / "untrained").mkdir()
    (tmp_path / "untrained" / "config.yaml").write_text((trained / "config.yaml").read_text())
    with pytest.raises(ExperimentError, match="no per-epoch numbers"):
        truncated_average(tmp_path / "untrained", 1)


def test_cli(trained, capsys):
    from espnet_ext.bin.average_epochs import main

    assert main([str(trained), "--up_to", "2", "3", "--nbest", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{trained}/valid.loss.ave_upto2.pth: valid.loss best 1 of epochs 1..2: ")
    assert out[1].startswith(f"{trained}/valid.loss.ave_upto3.pth")
    assert main([str(trained), "--up_to", "9"]) == 1
    assert "average_epochs: error:" in capsys.readouterr().err
