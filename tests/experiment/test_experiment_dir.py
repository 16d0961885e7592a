"""Experiment dirs of any ESPnet training, and packed models: taus, checkpoint 0, its identity.

The ESPnet-style run is trained in-process by espnet_ext (bit-identical to stock ESPnet:
tests/test_reconstruct_init.py) and then stripped of ``checkpoints/``, leaving what ESPnet's own
training leaves: its n-best ``{N}epoch.pth``, ``checkpoint.pth``, averaged model files.
"""

import contextlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import make_tone_data_dir, tiny_asr_config, train_args, write_char_token_list

pytest.importorskip("espnet2.tasks.asr")

from espnet_ext.experiment.experiment_dir import ExperimentDir, ExperimentError  # noqa: E402


@contextlib.contextmanager
def _cwd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _train(cmd):
    from espnet_ext.experiment.training import CheckpointKeepingASRTask

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        CheckpointKeepingASRTask.main(cmd=cmd)
    finally:
        torch.set_num_threads(threads)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _equal(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def espnet_run(tmp_path_factory):
    """(recipe dir, exp dir as ESPnet leaves it, the checkpoints espnet_ext kept, dev data dir).

    Trained 3 epochs keeping ESPnet's 2 best, with global-MVN statistics named by a path
    relative to the recipe dir (as ESPnet recipes do).
    """
    root = tmp_path_factory.mktemp("espnet_run")
    train = make_tone_data_dir(root / "data", "train", n_utts=6, seed=0)
    valid = make_tone_data_dir(root / "data", "valid", n_utts=3, seed=1)
    dev = make_tone_data_dir(root / "data", "dev", n_utts=3, seed=2)
    tokens = write_char_token_list(root / "tokens.txt")
    (root / "stats").mkdir()
    np.savez(root / "stats" / "feats_stats.npz", count=np.array(100.0), sum=np.full(20, 50.0),
             sum_square=np.full(20, 400.0))
    config = tiny_asr_config()
    config.update(normalize="global_mvn", normalize_conf={"stats_file": "stats/feats_stats.npz"})
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    with _cwd(root):
        _train(train_args(train, valid, tokens, Path("train.yaml"), Path("exp/asr_run"), max_epoch=3,
                          keep_nbest_models=2))
    exp = root / "exp" / "asr_run"
    shutil.move(str(exp / "checkpoints"), str(root / "kept"))
    return root, exp, root / "kept", dev


def test_espnet_epochs_are_taus_and_checkpoint0_is_reconstructed(espnet_run):
    root, exp_dir, kept, _ = espnet_run
    nbest = sorted(int(p.name[0]) for p in exp_dir.glob("[0-9]epoch.pth"))
    assert len(nbest) == 2
    with _cwd(root):
        exp = ExperimentDir(exp_dir)
        assert exp.saved_epochs() == nbest
        assert exp.available_taus() == [0] + nbest
        assert exp.resolve_taus(["0", "last"]) == [0, 3]
        assert exp.resolve_taus(["all"]) == [0] + nbest
        missing = ({1, 2, 3} - set(nbest)).pop()
        with pytest.raises(ExperimentError, match=(
                rf"tau={missing} was not saved.*saved taus: {', '.join(map(str, nbest))} \(and 0, "
                r"reconstructed from config.yaml\).*--keep_nbest_models")):
            exp.resolve_taus([str(missing)])
        # Checkpoint 0 rebuilt from config.yaml (global-MVN buffers included) is the one the
        # training built, bit for bit; the n-best epochs are ESPnet's own files.
        assert _equal(exp.load_checkpoint(0), _load(kept / "0epoch.pth"))
        assert _equal(exp.load_checkpoint(3), _load(kept / "3epoch.pth"))
        assert exp.checkpoint_file(3) == exp_dir / "3epoch.pth"
    # Run from elsewhere, the relative statistics path is named with the fix.
    with pytest.raises(ExperimentError, match=r"normalize_conf.stats_file = 'stats/feats_stats.npz' "
                                              r"not found.*run from there"):
        ExperimentDir(exp_dir).reconstruct_initial_weights(exp_dir / "elsewhere.pth")


def test_checkpoint_pth_is_read_through_its_model_entry(espnet_run, tmp_path):
    root, exp_dir, kept, _ = espnet_run
    exp = ExperimentDir(exp_dir)
    # ESPnet's resume file: model + optimizer + reporter statistics (NumPy scalars), weights only.
    assert _equal(exp.load_weights("checkpoint.pth"), _load(kept / "3epoch.pth"))
    bad = tmp_path / "pickled.pth"
    torch.save({"w": torch.zeros(2), "args": argparse_namespace()}, bad)
    with pytest.raises(ExperimentError, match=r"holds pickled objects other than weights "
                                              r"\(argparse.Namespace\).*state dict alone"):
        exp.load_weights(bad)
    with pytest.raises(ExperimentError, match=r"'nope.pth' not found .*available: .*checkpoint.pth"):
        exp.load_weights("nope.pth")


def argparse_namespace():
    import argparse

    return argparse.Namespace(lr=0.1)


def test_scan_and_analysis_of_an_espnet_run(espnet_run, capsys):
    """layer_scan re-initializes to the reconstructed tau 0 and an ESPnet epoch; layer_analysis
    reads it with weight updates over the epochs that exist."""
    from espnet_ext.bin.layer_analysis import main as analysis_main
    from espnet_ext.bin.layer_scan import main as scan_main

    root, exp_dir, _, dev = espnet_run
    with _cwd(root):
        rc = scan_main(["--exp_dir", str(exp_dir), "--data_dir", str(dev), "--model_file", "3epoch.pth",
                        "--modes", "reinit,rerandomize", "--taus", "0,last", "--granularity", "block",
                        "--batch_size", "3", "--no_progress"])
        assert rc == 0, capsys.readouterr().err
        rows = (exp_dir / "scan_block_dev" / "scan.tsv").read_text().splitlines()
        header = rows[0].split("\t")
        modes_taus = {(r.split("\t")[header.index("mode")], r.split("\t")[header.index("tau")]) for r in rows[1:]}
        assert ("reinit", "0") in modes_taus and ("reinit", "3") in modes_taus
        assert any(m == "rerandomize" for m, _ in modes_taus)
        meta = json.loads((exp_dir / "scan_block_dev" / "scan.json").read_text())
        assert meta["checkpoint0"] == {"file": str(exp_dir / "checkpoints" / "0epoch.reconstructed.pth"),
                                       "reconstructed": True}
        assert "reconstructed from config.yaml (seed 3)" in (exp_dir / "scan_block_dev" / "scan.md").read_text()
        rc = analysis_main(["--exp_dirs", str(exp_dir), "--dataset", "dev", "--out_dir", str(root / "ana")])
        assert rc == 0, capsys.readouterr().err
    (run,) = json.loads((root / "ana" / "analysis.json").read_text())["runs"]
    assert run["name"] == "asr_run" and run["reset"] == {"mode": "reinit", "value": 0}
    # The trajectory: the reconstructed checkpoint 0 and ESPnet's n-best epochs.
    assert run["epochs"] == [0] + sorted(int(p.name[0]) for p in exp_dir.glob("[0-9]epoch.pth"))
    assert run["final_weights"].endswith("3epoch.pth")


@pytest.mark.parametrize("change,reason", [
    ({"use_adapter": True}, r"use_adapter: true"),
    ({"frontend": "s3prl"}, r"frontend: s3prl loads pre-trained weights"),
    ({"init_param": ["gone/model.pth:encoder:encoder"]}, r"init_param file gone/model.pth not found"),
    ({"seed": None}, r"config.yaml has no seed"),
])
def test_reconstruction_is_refused_where_it_cannot_be_exact(tmp_path, change, reason):
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    config = {**tiny_asr_config(), "seed": 1, **change}
    (exp_dir / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save({"w": torch.zeros(1)}, exp_dir / "2epoch.pth")
    exp = ExperimentDir(exp_dir)
    assert exp.available_taus() == [2]
    with pytest.raises(ExperimentError, match=rf"not saved .*cannot be reconstructed exactly.*{reason}.*"
                                              r"--modes rerandomize.*taus 2.*espnet_ext.bin.asr_train"):
        exp.resolve_taus(["0"])
    assert sorted(p.name for p in exp_dir.iterdir()) == ["2epoch.pth", "config.yaml"]


def test_a_file_the_tool_did_not_write_is_never_overwritten(espnet_run):
    root, exp_dir, _, _ = espnet_run
    user_file = root / "mine.pth"
    user_file.write_bytes(b"precious")
    with _cwd(root), pytest.raises(ExperimentError, match=r"mine.pth exists and is not a reconstruction"):
        ExperimentDir(exp_dir).reconstruct_initial_weights(user_file)
    assert user_file.read_bytes() == b"precious"
    # Nor the record that would sit next to the output (e.g. a saved checkpoint 0's 0epoch.json).
    user_record = root / "theirs.json"
    user_record.write_text('{"seed": 1}')
    with _cwd(root), pytest.raises(ExperimentError, match=r"theirs.json exists and is not the record"):
        ExperimentDir(exp_dir).reconstruct_initial_weights(root / "theirs.pth")
    assert user_record.read_text() == '{"seed": 1}' and not (root / "theirs.pth").exists()


def test_checkpoint0_carries_the_identity_of_its_run(tmp_path):
    """A killed attempt's checkpoint 0 is replaced on a fresh start with another seed, refused
    on a resume with another seed, and refused by the analysis when config.yaml disagrees."""
    from espnet_ext.layers.reset import InitialWeightSampler
    from espnet_ext.experiment.training import InitialWeightsMismatchError

    train = make_tone_data_dir(tmp_path / "data", "train", n_utts=6, seed=0)
    valid = make_tone_data_dir(tmp_path / "data", "valid", n_utts=3, seed=1)
    tokens = write_char_token_list(tmp_path / "tokens.txt")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(tiny_asr_config()))
    out = tmp_path / "exp"

    def args(**extra):
        return train_args(train, valid, tokens, tmp_path / "train.yaml", out, **extra)

    _train(args(max_epoch=1))  # seed 3
    ckpt0 = out / "checkpoints" / "0epoch.pth"
    assert json.loads((out / "checkpoints" / "0epoch.json").read_text())["seed"] == 3
    seed3 = _load(ckpt0)
    # Killed during epoch 1: no checkpoint.pth, no epoch file; re-run with another seed.
    for p in [out / "checkpoint.pth", *out.glob("*epoch.pth")]:
        p.unlink()
    kept_epoch1 = out / "checkpoints" / "1epoch.pth"  # still the seed-3 attempt's
    seed3_epoch1 = _load(kept_epoch1)
    _train(args(max_epoch=1, seed=4))
    # The seed-3 attempt's kept epoch gave way to the new training's epoch 1.
    assert _equal(_load(kept_epoch1), _load(out / "1epoch.pth"))
    assert not _equal(_load(kept_epoch1), seed3_epoch1)
    record = json.loads((out / "checkpoints" / "0epoch.json").read_text())
    assert record["seed"] == 4 and record["reconstructed"] is False
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert _equal(_load(ckpt0), InitialWeightSampler.from_train_args(config).sample(4))
    assert not _equal(_load(ckpt0), seed3)
    seed4_mtime = ckpt0.stat().st_mtime_ns

    # Resuming the seed-4 training with seed 5 would pair its weights with a wrong checkpoint 0.
    with pytest.raises(InitialWeightsMismatchError,
                       match=r"0epoch.pth belongs to another run than this training resumes "
                             r"\(seed 4 there, 5 in config.yaml.*new --output_dir"):
        _train(args(max_epoch=2, seed=5))
    assert ckpt0.stat().st_mtime_ns == seed4_mtime
    # ESPnet rewrote config.yaml with seed 5 before training: the analysis refuses checkpoint 0.
    with pytest.raises(ExperimentError, match=r"0epoch.pth belongs to another run than .*config.yaml "
                                              r"\(seed 4 there, 5 in config.yaml"):
        ExperimentDir(out).resolve_taus(["0"])


def _pack(root, exp_dir, out, model="3epoch.pth"):
    """An ESPnet packed model, written by ESPnet's own pack (as python -m espnet2.bin.pack asr)."""
    from espnet2.main_funcs.pack_funcs import pack

    with _cwd(root):
        pack(files={"asr_model_file": str(exp_dir.relative_to(root) / model)},
             yaml_files={"asr_train_config": str(exp_dir.relative_to(root) / "config.yaml")},
             option=["stats/feats_stats.npz"], outpath=str(out))
    return out


def test_packed_model_and_model_dir_open_anywhere_and_reconstruct_tau0(espnet_run, tmp_path):
    from espnet_ext.federated.modelio import resolve_model_file, resolve_train_config
    from espnet_ext.experiment.packed_model import open_packed_model

    root, exp_dir, kept, _ = espnet_run
    archive = _pack(root, exp_dir, tmp_path / "asr_model.zip")
    archive_bytes = archive.read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with _cwd(elsewhere):  # not the recipe dir: the unpacked config names absolute paths
        packed = open_packed_model(archive)
        assert packed.root == Path("exp/packed_asr_model")
        stats = packed.exp.config["normalize_conf"]["stats_file"]
        assert Path(stats).is_absolute() and Path(stats).is_file()
        assert str(Path(stats).resolve()).startswith(str((elsewhere / "exp/packed_asr_model").resolve()))
        assert _equal(packed.exp.load_weights(packed.model_file), _load(kept / "3epoch.pth"))
        assert _equal(packed.exp.load_checkpoint(0), _load(kept / "0epoch.pth"))
        assert open_packed_model(archive).exp.path == packed.exp.path  # reused, not unpacked again
        # Federated runs read it like any experiment dir.
        resolved = yaml.safe_load(resolve_train_config(packed.exp.path, tmp_path / "fl" / "config.yaml").read_text())
        assert resolved["normalize_conf"]["stats_file"] == stats
        assert resolve_model_file(packed.exp.path, str(packed.model_file)).is_file()
        # A directory the tool did not write is never used.
        (elsewhere / "taken").mkdir()
        (elsewhere / "taken" / "notes.txt").write_text("mine")
        with pytest.raises(ExperimentError, match=r"taken exists and was not written by espnet_ext"):
            open_packed_model(archive, elsewhere / "taken")
        assert (elsewhere / "taken" / "notes.txt").read_text() == "mine"
    assert archive.read_bytes() == archive_bytes

    # The same layout as a model dir (as hubs distribute it): referenced, never written into.
    hub = tmp_path / "hub_model"
    with zipfile.ZipFile(archive) as z:
        z.extractall(hub)
    before = sorted(str(p.relative_to(hub)) for p in hub.rglob("*"))
    with _cwd(elsewhere):
        from_dir = open_packed_model(hub, tmp_path / "from_hub")
        assert _equal(from_dir.exp.load_checkpoint(0), _load(kept / "0epoch.pth"))
        assert from_dir.exp.resolve_taus(["all"]) == [0, 3]
    assert sorted(str(p.relative_to(hub)) for p in hub.rglob("*")) == before


def test_archives_that_are_no_packed_model_are_refused(tmp_path):
    from espnet_ext.experiment.packed_model import open_packed_model

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("meta.yaml", yaml.safe_dump({"files": {"asr_model_file": "m.pth"},
                                                "yaml_files": {"asr_train_config": "c.yaml"}}))
        z.writestr("../outside.txt", "x")
    with pytest.raises(ExperimentError, match=r"'../outside.txt' points outside the archive"):
        open_packed_model(evil, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "out").exists()
    tts = tmp_path / "tts.zip"
    with zipfile.ZipFile(tts, "w") as z:
        z.writestr("meta.yaml", yaml.safe_dump({"files": {"tts_model_file": "m.pth"},
                                                "yaml_files": {"tts_train_config": "c.yaml"}}))
    with pytest.raises(ExperimentError, match=r"no asr_train_config/asr_model_file.*only ESPnet ASR"):
        open_packed_model(tts, tmp_path / "out")
    plain = tmp_path / "model.pth"
    plain.write_bytes(b"not an archive")
    with pytest.raises(ExperimentError, match=r"neither a zip nor a tar archive"):
        open_packed_model(plain, tmp_path / "out")
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_packed_model_scan_and_analysis(espnet_run, tmp_path, capsys):
    """layer_scan and layer_analysis take a packed model without retraining: a
    re-randomization-only scan is analysed, theta_0 reconstructed, no epochs kept."""
    from espnet_ext.bin.layer_analysis import main as analysis_main
    from espnet_ext.bin.layer_scan import main as scan_main

    root, exp_dir, _, dev = espnet_run
    archive = _pack(root, exp_dir, tmp_path / "m.zip", model="valid.loss.ave.pth")
    with _cwd(tmp_path):
        rc = scan_main(["--packed_model", str(archive), "--data_dir", str(dev), "--modes", "rerandomize",
                        "--batch_size", "3", "--no_progress"])
        assert rc == 0, capsys.readouterr().err
        scan = next((tmp_path / "exp" / "packed_m").rglob("scan_block_dev/scan.tsv"))
        assert len(scan.read_text().splitlines()) > 5
        rc = analysis_main(["--packed_model", str(archive), "--dataset", "dev", "--out_dir", "ana"])
        assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "ana" / "analysis.md").is_file()
    (run,) = json.loads((tmp_path / "ana" / "analysis.json").read_text())["runs"]
    assert run["reset"] == {"mode": "rerandomize", "value": 4}  # the training seed + 1
    assert run["epochs"] == [0]  # a packed model keeps no epochs: theta_0 only, reconstructed
    assert run["final_weights"].endswith("valid.loss.ave_2best.pth")
    assert next((tmp_path / "exp" / "packed_m").rglob("checkpoints/0epoch.reconstructed.pth")).is_file()


def test_results_count_parameters_of_an_espnet_run(espnet_run):
    """RESULTS.md's parameter count comes from ESPnet's own epoch files when checkpoint 0 is absent."""
    from espnet_ext.reporting.recipe_results import count_experiment_parameters, count_parameters

    _, exp_dir, kept, _ = espnet_run
    expected = count_parameters(kept / "0epoch.pth")
    assert expected == sum(v.numel() for k, v in _load(kept / "0epoch.pth").items()
                           if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert count_experiment_parameters(exp_dir) == expected
    assert count_experiment_parameters(exp_dir.parent / "nothing") is None


def test_reconstruct_init_cli(espnet_run, tmp_path, capsys):
    from espnet_ext.bin.reconstruct_init import main

    root, exp_dir, kept, _ = espnet_run
    out = tmp_path / "init.pth"
    with _cwd(root):
        assert main(["--exp_dir", str(exp_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert _equal(_load(out), _load(kept / "0epoch.pth"))
    assert json.loads((tmp_path / "init.json").read_text())["reconstructed"] is True
    # Bad input: one line naming the reason, exit status 1, no traceback.
    bad = tmp_path / "adapter"
    bad.mkdir()
    (bad / "config.yaml").write_text(yaml.safe_dump({**tiny_asr_config(), "seed": 1, "use_adapter": True}))
    assert main(["--exp_dir", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("reconstruct_init: error: checkpoint 0 of ") and "use_adapter: true" in err[-1]


def test_checkpoint0_without_identity_record_is_checked_by_its_weights(tmp_path):
    """A checkpoint 0 kept by an older version (no 0epoch.json): same weights get the record;
    other weights are replaced on a fresh start and refused on a resume."""
    from helpers import build_tiny_model

    from espnet_ext.experiment.training import InitialWeightsMismatchError, save_initial_weights

    model = build_tiny_model(tmp_path)
    config = {**tiny_asr_config(), "seed": 1}
    out = tmp_path / "exp"
    ckpt0, record = out / "checkpoints" / "0epoch.pth", out / "checkpoints" / "0epoch.json"
    ckpt0.parent.mkdir(parents=True)
    torch.save(model.state_dict(), ckpt0)
    mtime = ckpt0.stat().st_mtime_ns
    save_initial_weights(model, out, resuming=True, config=config)
    assert ckpt0.stat().st_mtime_ns == mtime and json.loads(record.read_text())["seed"] == 1

    record.unlink()
    other = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(other, ckpt0)
    with pytest.raises(InitialWeightsMismatchError, match=r"its weights differ from this training's"):
        save_initial_weights(model, out, resuming=True, config=config)
    assert _equal(_load(ckpt0), other) and not record.exists()
    save_initial_weights(model, out, resuming=False, config=config)
    assert _equal(_load(ckpt0), model.state_dict()) and json.loads(record.read_text())["seed"] == 1


def test_records_of_the_recipe_driver_and_config_and_weights_files(tmp_path):
    from espnet_ext.experiment.checkpoints import init_param_path
    from espnet_ext.experiment.experiment_dir import (
        ExperimentDir,
        load_weights_file,
        read_config_file,
    )

    exp = ExperimentDir(tmp_path)
    assert exp.train_wall_path == tmp_path / "train_wall_s.txt"
    assert exp.train_wall_s() is None  # not recorded
    exp.train_wall_path.write_text("")
    assert exp.train_wall_s() is None  # cut while written
    exp.train_wall_path.write_text("1234\n")
    assert exp.train_wall_s() == 1234.0

    assert exp.epoch_seconds() is None  # no checkpoint.pth

    (tmp_path / "copy.yaml").write_text("seed: 3\nencoder: conformer\n")
    assert read_config_file(tmp_path / "copy.yaml") == {"seed": 3, "encoder": "conformer"}
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ExperimentError, match="list.yaml is not a YAML mapping"):
        read_config_file(tmp_path / "list.yaml")

    torch.save({"w": torch.ones(2)}, tmp_path / "m.pth")
    assert torch.equal(load_weights_file(tmp_path / "m.pth")["w"], torch.ones(2))
    with pytest.raises(ExperimentError, match="model file not found"):
        load_weights_file(tmp_path / "missing.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ExperimentError, match="does not hold a model state dict"):
        load_weights_file(tmp_path / "list.pth")

    assert init_param_path("exp/a/valid.acc.ave.pth:encoder:encoder:decoder") == "exp/a/valid.acc.ave.pth"
    assert init_param_path("model.pth") == "model.pth"


def test_epoch_seconds_from_the_reporter_of_checkpoint_pth(tmp_path):
    """Epoch times (training + validation) come from ESPnet's own Reporter as its trainer saves
    it in checkpoint.pth (timedelta and numpy values, loaded weights-only)."""
    import datetime

    import numpy as np

    reporter_mod = pytest.importorskip("espnet2.train.reporter")
    reporter = reporter_mod.Reporter()
    for epoch in (1, 2):
        reporter.set_epoch(epoch)
        for key in ("train", "valid"):
            with reporter.observe(key) as sub:
                sub.register({"loss": np.float64(1.5)})
                sub.next()
    state = reporter.state_dict()
    # Known times instead of the measured ones: epoch 1 took 60 + 2 s, epoch 2 58.5 + 1.5 s.
    for (epoch, key), seconds in {(1, "train"): 60, (1, "valid"): 2, (2, "train"): 58.5,
                                  (2, "valid"): 1.5}.items():
        state["stats"][epoch][key]["time"] = datetime.timedelta(seconds=seconds)
    torch.save({"model": {"w": torch.ones(1)}, "reporter": state, "optimizers": [],
                "schedulers": [], "scaler": None}, tmp_path / "checkpoint.pth")
    assert ExperimentDir(tmp_path).epoch_seconds() == {1: pytest.approx(62.0), 2: pytest.approx(60.0)}
    # A checkpoint.pth without a reporter (not ESPnet's) or one that is cut: no times, no error.
    torch.save({"model": {}}, tmp_path / "checkpoint.pth")
    assert ExperimentDir(tmp_path).epoch_seconds() is None
    (tmp_path / "checkpoint.pth").write_bytes(b"cut")
    assert ExperimentDir(tmp_path).epoch_seconds() is None
