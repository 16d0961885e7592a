"""Federated simulations end to end: adaptation improves the withheld domain, runs resume to the
same model, failures are tolerated, bad options fail early, Ray and in-process runs agree."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

asr = pytest.importorskip("espnet2.tasks.asr")

from espnet_ext.federated.client import LocalTraining  # noqa: E402


def _options(**extra):
    opts = dict(rounds=3, clients_per_round=2, backend="local", progress=False,
                local=LocalTraining(epochs=1, batch_size=3, optim="sgd", lr=0.1))
    opts.update(extra)
    return opts


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_federated_adaptation_improves_the_withheld_domain(world, tmp_path):
    from espnet_ext.federated.simulation import run_plans

    out = tmp_path / "fl"
    table = run_plans(world["exp"], "latest.pth", world["adapt"], world["eval"], out,
                      ["none", "uniform", "targeted"], rate=0.5, scan_tsv=world["scan"],
                      match_cost="params", **_options())
    res = {p: json.loads((out / p / "results.json").read_text()) for p in ("none", "uniform", "targeted")}
    pre = res["none"]["scores"]["pretrained"]
    assert pre["orig"]["CER"] < 10 and pre["adapt"]["CER"] > 40  # the domain gap exists
    for plan, r in res.items():
        assert r["scores"]["final"]["adapt"]["CER"] < pre["adapt"]["CER"] - 30, plan
    # Costs: FedAvg trains everything; targeted drops units of the ambient block only; uniform
    # is matched to targeted's trained parameters.
    cost = {p: r["cost"] for p, r in res.items()}
    assert cost["none"]["params_fraction"] == 1.0
    assert 0.5 < cost["targeted"]["params_fraction"] < 1.0
    assert cost["targeted"]["params_trained"] == res["targeted"]["planned_cost_per_client"]["params_trained"]
    assert cost["targeted"]["bytes_down"] < cost["none"]["bytes_down"]
    planned = {p: r["planned_cost_per_client"]["params_trained"] for p, r in res.items()}
    assert abs(planned["uniform"] - planned["targeted"]) / planned["targeted"] < 0.1
    assert json.loads((out / "targeted" / "plan.json").read_text())["group_rates"] == {"encoder.encoders.1": 0.5}
    assert cost["none"]["updates"] == 3 * 2 and cost["none"]["failures"] == 0
    # The table: the pre-trained model and one row per plan, with scores on both domains.
    lines = table.splitlines()
    assert "adapt CER" in lines[0] and "orig CER" in lines[0]
    assert [line.split("|")[1] for line in lines[2:6]] == ["pre-trained", "none", "uniform", "targeted"]
    assert (out / "results.md").read_text() == table
    # The final model decodes like any ESPnet model from the run's config.
    model, _ = asr.ASRTask.build_model_from_file(out / "targeted" / "config.yaml",
                                                 out / "targeted" / "model.pth", "cpu")
    assert (out / "targeted" / "decode" / "round3" / "adapt" / "text").is_file()


def test_federated_training_from_scratch_starts_at_checkpoint_0_and_learns(world, tmp_path):
    from espnet_ext.federated.simulation import run_plans

    out = tmp_path / "scratch"
    run_plans(world["exp"], "checkpoints/0epoch.pth", world["adapt"], world["eval"], out, ["none"],
              **_options(rounds=4, local=LocalTraining(epochs=2, batch_size=3, optim="adam", lr=0.01)))
    res = json.loads((out / "none" / "results.json").read_text())
    assert res["scores"]["pretrained"]["adapt"]["CER"] >= 90  # the untrained model
    losses = [row["loss"] for row in res["history"] if row["round"] >= 1]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]


def test_killed_run_resumes_to_the_same_final_model_and_failures_are_tolerated(world, tmp_path):
    from espnet_ext.federated.plan import DropoutPlan
    from espnet_ext.federated.server import round_checkpoint_path
    from espnet_ext.federated.simulation import prepare_run, run_federated

    plan = DropoutPlan("uniform", {"encoder.encoders.0": 0.5, "encoder.encoders.1": 0.5,
                                   "decoder.decoders.0": 0.5})
    common = dict(failure_prob=0.4, seed=5, keep_checkpoints=5)

    whole = prepare_run(world["exp"], "latest.pth", world["adapt"], world["eval"][:1],
                        tmp_path / "whole", plan, **_options(**common))
    run_federated(whole)

    # The same run killed while writing round 2's checkpoint: rounds 1-2 ran, round 2's
    # ledger/history rows were written, its checkpoint was not.
    killed = prepare_run(world["exp"], "latest.pth", world["adapt"], world["eval"][:1],
                         tmp_path / "killed", plan, **_options(rounds=2, **common))
    run_federated(killed)
    round_checkpoint_path(killed.out_dir, 2).unlink()
    with open(killed.out_dir / "costs.tsv", "a") as f:
        f.write("2\t1\tb1\t6")  # a line cut short by the kill
    resumed = prepare_run(world["exp"], "latest.pth", world["adapt"], world["eval"][:1],
                          tmp_path / "killed", plan, **_options(**common))
    run_federated(resumed)

    a, b = _load(whole.out_dir / "model.pth"), _load(resumed.out_dir / "model.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pretrained = _load(world["exp"] / "latest.pth")
    assert any(not torch.equal(a[k], pretrained[k]) for k in a)

    def ledger(run):
        lines = (run.out_dir / "costs.tsv").read_text().splitlines()
        header = lines[0].split("\t")
        keep = [header.index(c) for c in ("round", "client", "num_examples", "params_trained",
                                          "bytes_down", "bytes_up", "steps", "failed", "reason")]
        return [[line.split("\t")[i] for i in keep] for line in lines[1:]]

    assert ledger(whole) == ledger(resumed)
    rows = ledger(whole)
    failed = [r for r in rows if r[7] == "True"]
    assert failed and all(r[8].startswith("injected client failure") for r in failed)
    assert len(rows) == 3 * 2
    history = [json.loads(line) for line in (resumed.out_dir / "history.jsonl").read_text().splitlines()]
    assert [h["round"] for h in history] == [0, 1, 2, 3]
    assert sum(h.get("failures", 0) for h in history) == len(failed)

    # A resumed run must have the same options.
    from espnet_ext.federated.options import OptionsError

    plan_file = (resumed.out_dir / "plan.json").read_text()
    with pytest.raises(OptionsError, match=r"has seed = 5, this call 6"):
        prepare_run(world["exp"], "latest.pth", world["adapt"], world["eval"][:1],
                    tmp_path / "killed", plan, **_options(**dict(common, seed=6)))
    assert (resumed.out_dir / "plan.json").read_text() == plan_file
    assert not (resumed.out_dir / ".config.yaml.new").exists()


def test_clients_failing_for_real_stop_the_run(world, tmp_path, monkeypatch):
    import espnet_ext.federated.client as client
    from espnet_ext.federated.plan import no_dropout_plan
    from espnet_ext.federated.simulation import prepare_run, run_federated
    from espnet_ext.federated.strategy import ClientFailureError

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(client, "run_client_update", broken)
    setup = prepare_run(world["exp"], "latest.pth", world["adapt"], [], tmp_path / "broken",
                        no_dropout_plan(), **_options())
    with pytest.raises(ClientFailureError, match="all 2 clients failed; first error: OSError: disk full"):
        run_federated(setup)


def test_bad_options_fail_before_any_round(world, tmp_path, capsys):
    from espnet_ext.bin.fl_simulate import main

    base = ["run", "--exp_dir", str(world["exp"]), "--model_file", "latest.pth",
            "--adapt_data", str(world["adapt"]), "--out_dir", str(tmp_path / "bad"), "--backend", "local"]
    assert main(base + ["--plans", "none", "--clients_per_round", "9"]) == 1
    assert "9 clients per round but only 4 clients" in capsys.readouterr().err
    assert main(base + ["--plans", "uniform", "--rate", "1.0", "--match_cost", "none"]) == 1
    assert "dropout rate must be in [0, 1)" in capsys.readouterr().err
    assert main(base + ["--plans", "targeted"]) == 1
    assert "needs the layer-reset scan result (--scan_tsv)" in capsys.readouterr().err
    assert main(base + ["--plans", "none", "--model_file", "missing.pth"]) == 1
    assert "model file 'missing.pth' not found" in capsys.readouterr().err
    assert main(base + ["--plans", "none", "--seed", "1", "--seeds", "2,3"]) == 1
    assert "give one seed (--seed) or several (--seeds), not both" in capsys.readouterr().err
    assert main(base + ["--plans", "none", "--seeds", "1,1"]) == 1
    assert "each seed once, got [1, 1]" in capsys.readouterr().err
    # A misspelt plan key used to run without any dropout.
    plan_file = tmp_path / "plan.json"
    plan_file.write_text('{"name": "x", "rates": {"encoder.encoders.1": 0.5}}')
    assert main(base + ["--plans", "file", "--plan_file", str(plan_file)]) == 1
    err = capsys.readouterr().err
    assert f"{plan_file}: unknown key 'rates'" in err and "allowed keys: name, group_rates" in err
    assert not (tmp_path / "bad" / "none" / "checkpoints").exists()
    assert not (tmp_path / "bad" / "file").exists()


def test_seeds_give_distinct_runs_and_one_row_per_plan_with_spread_and_paired_intervals(world, tmp_path):
    from espnet_ext.federated.evaluate import read_per_utterance
    from espnet_ext.federated.simulation import run_plans

    out = tmp_path / "fl"

    def run():
        return run_plans(world["exp"], "latest.pth", world["adapt"], world["eval"], out,
                         ["none", "uniform", "targeted"], rate=0.5, scan_tsv=world["scan"],
                         match_cost="params", seeds=[1, 2], bootstrap_resamples=300, **_options(rounds=2))

    table = run()
    res = {(p, s): json.loads((out / p / f"seed{s}" / "results.json").read_text())
           for p in ("none", "uniform", "targeted") for s in (1, 2)}
    assert {k: r["seed"] for k, r in res.items()} == {k: k[1] for k in res}
    # Each seed is its own run: other client samples and local training, another final model.
    a, b = _load(out / "none" / "seed1" / "model.pth"), _load(out / "none" / "seed2" / "model.pth")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # per_utt.tsv next to results.json holds the counts behind the final CER.
    counts = read_per_utterance(out / "targeted" / "seed1" / "per_utt.tsv")
    adapt = counts["adapt"].values()
    cer = 100 * sum(c[3] for c in adapt) / sum(c[2] for c in adapt)
    assert round(cer, 2) == res[("targeted", 1)]["scores"]["final"]["adapt"]["CER"]
    assert len(counts["adapt"]) == 8 and len(counts["orig"]) == 8
    # One row per plan: mean ± std (min-max) over the two seeds.
    rows = [line.split("|") for line in table.splitlines() if line.startswith("|model") or line.startswith("|none")]
    head, none_row = rows[0], rows[1]
    cers = [res[("none", s)]["scores"]["final"]["adapt"]["CER"] for s in (1, 2)]
    mean, std = np.mean(cers), np.std(cers, ddof=1)
    assert none_row[head.index("seeds")] == "1,2"
    assert none_row[head.index("adapt CER")] == (f"{mean:.2f} ± {std:.2f} "
                                                 f"({min(cers):.2f}-{max(cers):.2f})")
    for pair in ("targeted - uniform|adapt|CER|", "targeted - none|adapt|CER|", "targeted - none|orig|WER|"):
        assert f"|{pair}" in table
    # The same command again computes nothing new and gives the same table.
    before = (out / "targeted" / "seed2" / "history.jsonl").read_text()
    assert run() == table
    assert (out / "targeted" / "seed2" / "history.jsonl").read_text() == before


def test_run_where_every_client_failed_exits_nonzero_and_is_recorded(world, tmp_path, capsys):
    from espnet_ext.bin.fl_simulate import main

    out = tmp_path / "failing"
    # Seed 0 with failure probability 0.95: every client of both rounds fails (injected, seeded).
    code = main(["run", "--exp_dir", str(world["exp"]), "--model_file", "latest.pth",
                 "--adapt_data", str(world["adapt"]), "--eval_data", f"adapt={world['eval'][0][1]}",
                 "--out_dir", str(out), "--plans", "none", "--rounds", "2", "--clients_per_round", "2",
                 "--failure_prob", "0.95", "--backend", "local", "--no_progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "had no client update in any of its 2 rounds (4 client updates failed); global model unchanged" in err
    results = json.loads((out / "none" / "results.json").read_text())
    assert results["rounds_with_updates"] == 0 and results["cost"]["failures"] == 4
    assert results["scores"]["final"] == results["scores"]["pretrained"]
    assert "rounds_with_updates: 0**: no client update in any of its 2 rounds" in (out / "none" / "results.md").read_text()
    assert "rounds_with_updates: 0" in (out / "results.md").read_text()


def test_sample_rates_are_read_once_per_call_not_per_plan_and_seed(world, tmp_path, monkeypatch):
    import espnet_ext.data.audio as audio
    import espnet_ext.federated.simulation as simulation

    checked = []
    check = audio.check_sample_rate

    def counting_check(source, *args, **kwargs):
        checked.append(Path(source))
        return check(source, *args, **kwargs)

    class Prepared(Exception):
        """Every run is prepared; stop before the first simulation."""

    def stop(setup, ray_address=None):
        raise Prepared

    monkeypatch.setattr(audio, "check_sample_rate", counting_check)
    monkeypatch.setattr(simulation, "run_federated", stop)
    with pytest.raises(Prepared):
        simulation.run_plans(world["exp"], "latest.pth", world["adapt"], world["eval"], tmp_path / "fl",
                             ["none", "uniform"], rate=0.5, match_cost=None, seeds=[1, 2], **_options())
    # 2 plans x 2 seeds, 3 data dirs: each data dir once.
    assert sorted(checked) == sorted(Path(d) for d in [world["adapt"]] + [d for _, d in world["eval"]])
    assert len(list((tmp_path / "fl").glob("*/seed*/config.yaml"))) == 4  # every run was prepared


def test_build_plans_matches_uniform_to_the_targeted_cost_only_with_a_scan(world):
    from espnet_ext.federated.simulation import build_plans, make_plan, model_info

    info = model_info(world["exp"] / "config.yaml")
    plans = build_plans(["none", "uniform"], info, "params", rate=0.5, scan_tsv=world["scan"])
    assert list(plans) == ["none", "uniform"]  # the targeted plan it matched is not returned
    matched = make_plan("uniform", info, match_plan=make_plan("targeted", info, rate=0.5, scan_tsv=world["scan"]),
                        match_metric="params")
    assert plans["uniform"].to_dict() == matched.to_dict()
    unmatched = build_plans(["uniform"], info, None, rate=0.5, scan_tsv=world["scan"])
    assert unmatched["uniform"].to_dict() == make_plan("uniform", info, rate=0.5).to_dict()


def test_ray_temp_dir_stays_with_the_run(tmp_path):
    from espnet_ext.federated.simulation import ray_temp_dir

    import shutil
    import tempfile

    short_run = Path(tempfile.mkdtemp(prefix="fl", dir="/tmp"))
    assert ray_temp_dir(short_run) == short_run / "ray" and (short_run / "ray").is_dir()
    shutil.rmtree(short_run)
    deep = tmp_path / ("x" * 60) / "run"
    short = ray_temp_dir(deep)
    # Ray's socket paths must stay short: a long run dir links to a short folder.
    assert len(str(short)) < 48 and (deep / "ray").resolve() == short.resolve()
    shutil.rmtree(short)


def test_split_command_writes_both_domains(world, tmp_path):
    from espnet_ext.bin.fl_simulate import main
    from espnet_ext.data.kaldi import KaldiDataDir

    assert main(["split", "--data_dir", str(world["adapt"]), "--out_dir", str(tmp_path / "split"),
                 "--method", "speakers", "--speakers", "b0,b1"]) == 0
    assert KaldiDataDir.read(tmp_path / "split" / "withheld").speakers == ["b0", "b1"]
    assert KaldiDataDir.read(tmp_path / "split" / "central").speakers == ["b2", "b3"]


@pytest.mark.slow
def test_ray_simulation_equals_the_in_process_run(world, tmp_path):
    from espnet_ext.federated.plan import DropoutPlan
    from espnet_ext.federated.simulation import prepare_run, run_federated

    plan = DropoutPlan("uniform", {"encoder.encoders.1": 0.5})
    runs = {}
    for backend in ("local", "ray"):
        setup = prepare_run(world["exp"], "latest.pth", world["adapt"], world["eval"][:1],
                            tmp_path / backend, plan,
                            **_options(rounds=2, backend=backend, num_workers=2, failure_prob=0.3))
        runs[backend] = run_federated(setup)
    a, b = _load(tmp_path / "local" / "model.pth"), _load(tmp_path / "ray" / "model.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs["ray"]["scores"] == runs["local"]["scores"]
    assert (tmp_path / "ray" / "ray").exists()  # Ray's temp files stay with the run


def test_parallel_runs_in_processes_equal_the_runs_one_after_another(world, tmp_path, one_thread):
    from espnet_ext.federated.simulation import run_plans

    def run(out, parallel_runs):
        return run_plans(world["exp"], "latest.pth", world["adapt"], world["eval"][:1], out, ["none", "uniform"],
                         rate=0.5, match_cost=None, seeds=[1, 2], bootstrap_resamples=300,
                         parallel_runs=parallel_runs, **_options(rounds=2, client_threads=1))

    for n in (1, 2):  # the tables differ only in measured seconds and memory
        run(tmp_path / f"p{n}", n)
    for run_dir in ("none/seed1", "none/seed2", "uniform/seed1", "uniform/seed2"):
        a, b = _load(tmp_path / "p1" / run_dir / "model.pth"), _load(tmp_path / "p2" / run_dir / "model.pth")
        assert all(torch.equal(a[k], b[k]) for k in a), run_dir
        res = [json.loads((tmp_path / f"p{n}" / run_dir / "results.json").read_text()) for n in (1, 2)]
        assert res[0]["scores"] == res[1]["scores"]


def test_parallel_runs_need_the_local_backend(world, tmp_path):
    from espnet_ext.federated.options import OptionsError
    from espnet_ext.federated.simulation import run_plans

    with pytest.raises(OptionsError, match="--parallel_runs 2 needs --backend local"):
        run_plans(world["exp"], "latest.pth", world["adapt"], world["eval"][:1], tmp_path / "fl", ["none"],
                  seeds=[1, 2], parallel_runs=2, **_options(backend="ray"))
    assert not (tmp_path / "fl" / "none").exists()  # refused before any run dir was made


def _first_client(world):
    """(the world's trained model, ESPnet's preprocessor and collate function, the utterances of
    its first speaker as one client's examples)."""
    from espnet_ext.data.kaldi import KaldiDataDir
    from espnet_ext.federated.client import load_utterances
    from espnet_ext.federated.modelio import build_asr_model, build_data_pipeline, load_weights
    from espnet_ext.federated.partition import speaker_clients

    config = world["exp"] / "config.yaml"
    model = build_asr_model(config)
    model.load_state_dict(load_weights(world["exp"] / "latest.pth"))
    preprocess, collate = build_data_pipeline(config)
    data = KaldiDataDir.read(world["adapt"])
    return model, preprocess, collate, load_utterances(data, speaker_clients(data)[0].utterances)


def test_client_training_under_cpu_bf16_autocast_trains_float32_weights_differently(world):
    """--client_cpu_autocast bf16: the clients' forward runs in bfloat16 (other updates than in
    float32, from the same seed), the weights stay float32, and a run's identity only changes
    when it is used (runs made before the option resume)."""
    import copy

    from espnet_ext.federated.client import train_locally

    model, preprocess, collate, examples = _first_client(world)
    trained = {}
    for name in ("none", "bf16"):
        m = copy.deepcopy(model)
        opts = LocalTraining(steps=2, batch_size=3, optim="sgd", lr=0.1, cpu_autocast=name)
        result = train_locally(m, examples, preprocess, collate, opts, seed=(0, 1, 0))
        assert result.steps == 2 and np.isfinite(result.loss)
        assert all(p.dtype == torch.float32 for p in m.parameters())
        assert m.forward.__func__ is type(m).forward  # the autocast wrapper is gone after training
        trained[name] = m.state_dict()
    w = "encoder.encoders.0.feed_forward.w_1.weight"
    assert not torch.equal(trained["none"][w], trained["bf16"][w])
    assert torch.allclose(trained["none"][w], trained["bf16"][w], atol=0.05)
    assert "cpu_autocast" not in LocalTraining().identity()
    assert LocalTraining(cpu_autocast="bf16").identity()["cpu_autocast"] == "bf16"
    with pytest.raises(ValueError, match="cpu_autocast"):
        LocalTraining(cpu_autocast="fp8").validate()


def test_client_training_with_fast_dropout_and_channels_last(world, monkeypatch):
    """--client_cpu_dropout fast / --client_cpu_channels_last true: while a client trains, its
    dropout masks come from cpu_dropout.fast_dropout and its conv2d weights are channels-last;
    afterwards the model is as before (torch's dropout, contiguous weights), and a run's identity
    names the options only when used."""
    from espnet_ext.experiment import cpu_dropout
    from espnet_ext.federated.client import train_locally

    model, preprocess, collate, examples = _first_client(world)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert convs and dropouts
    drawn, layouts = [], []
    real = cpu_dropout.fast_dropout
    monkeypatch.setattr(cpu_dropout, "fast_dropout", lambda *a, **k: drawn.append(1) or real(*a, **k))
    convs[0].register_forward_pre_hook(
        lambda m, _: layouts.append(m.weight.is_contiguous(memory_format=torch.channels_last)))
    for p in dropouts:
        p.p = 0.1  # the tiny config may train without dropout: give the masks something to do
    opts = LocalTraining(steps=2, batch_size=3, optim="sgd", lr=0.1, cpu_dropout="fast",
                         cpu_channels_last=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_locally(model, examples, preprocess, collate, opts, seed=(0, 1, 0))
    assert result.steps == 2 and np.isfinite(result.loss)
    assert drawn and layouts and all(layouts)
    assert all(c.weight.is_contiguous() for c in convs)
    assert all("forward" not in d.__dict__ for d in dropouts)  # torch's dropout is back
    w = "encoder.encoders.0.feed_forward.w_1.weight"
    assert not torch.equal(before[w], model.state_dict()[w])
    assert set(LocalTraining().identity()).isdisjoint({"cpu_dropout", "cpu_channels_last"})
    assert LocalTraining(cpu_dropout="fast", cpu_channels_last=True).identity() == dict(
        LocalTraining().identity(), cpu_dropout="fast", cpu_channels_last=True)
    with pytest.raises(ValueError, match="cpu_dropout must be one of torch, fast"):
        LocalTraining(cpu_dropout="faster").validate()
