"""The frozen-layers baseline: clients train the full model but the frozen (ambient) groups, return
only the trained groups, the server merges only those, and the frozen groups are chosen from the
scan, least harm first, up to the targeted plan's client cost."""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import build_tiny_model, train_tiny_model

asr = pytest.importorskip("espnet2.tasks.asr")

from espnet_ext.federated.client import LocalTraining  # noqa: E402
from espnet_ext.federated.plan import (  # noqa: E402
    DropoutPlan,
    GroupImportance,
    ModelInfo,
    PlanError,
    least_harm_first,
    matched_frozen_plan,
    targeted_plan,
    uniform_plan,
)
from espnet_ext.scan.result import ScanRow, write_tsv  # noqa: E402

# (group, label, CER increase after reset): after_norm is less harmful to reset than block 1.
SCAN = (("encoder.embed", "critical", 90.0), ("encoder.encoders.0", "critical", 40.0),
        ("encoder.encoders.1", "ambient", 1.0), ("encoder.after_norm", "ambient", 0.5),
        ("ctc", "critical", 99.0))
FROZEN = ("encoder.after_norm", "encoder.encoders.1")
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model trained one epoch, its training data (two speakers: two clients) and a scan."""
    root = tmp_path_factory.mktemp("frozen")
    exp, train = train_tiny_model(root, max_epoch=1)
    scan = root / "scan.tsv"
    write_tsv(scan, [ScanRow("dev", g, "enc_block", None, None, "reinit", 0, None, 0.0, d, 0.0, d, label)
                     for g, label, d in SCAN])
    return {"exp": exp, "adapt": train, "valid": root / "data" / "valid", "scan": scan}


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    return ModelInfo.from_model(build_tiny_model(tmp_path_factory.mktemp("frozen_info")))


def _frozen(key: str) -> bool:
    """Whether a state-dict key is in FROZEN (block-level groups: their keys share the prefix)."""
    return any(key.startswith(g + ".") for g in FROZEN)


def _bytes(state, keys) -> int:
    return sum(state[k].numel() * state[k].element_size() for k in keys)


def test_client_trains_and_returns_only_unfrozen_groups_and_server_keeps_frozen_ones(
        world, tmp_path, monkeypatch, one_thread):
    import espnet_ext.federated.client as client
    from espnet_ext.federated.cost import CostLedger
    from espnet_ext.federated.modelio import build_asr_model
    from espnet_ext.federated.server import load_round_checkpoint
    from espnet_ext.federated.simulation import make_plan, model_info, prepare_run, run_federated

    out = tmp_path / "frozen"
    setup = prepare_run(world["exp"], "latest.pth", world["adapt"], [], out,
                        DropoutPlan("frozen", {}, frozen_groups=FROZEN), rounds=1, clients_per_round=2,
                        backend="local", progress=False,
                        local=LocalTraining(epochs=1, batch_size=3, optim="sgd", lr=0.1))
    # The scan gives the same groups: after_norm alone is not enough, then block 1.
    plan = make_plan("frozen", model_info(out / "config.yaml"), rate=0.5, scan_tsv=world["scan"])
    assert plan.frozen_groups == FROZEN
    trained_models = []
    train_locally = client.train_locally

    def keep_model(model, *args, **kwargs):
        result = train_locally(model, *args, **kwargs)
        trained_models.append(model)
        return result

    monkeypatch.setattr(client, "train_locally", keep_model)
    run_federated(setup)

    pretrained = torch.load(world["exp"] / "latest.pth", map_location="cpu", weights_only=True)
    model = build_asr_model(out / "config.yaml")
    params = [n for n, _ in model.named_parameters()]
    sent = [k for k in model.state_dict() if k in params or k.rsplit(".", 1)[-1] in _BN_BUFFERS]
    trained_params = [k for k in params if not _frozen(k)]
    assert any(_frozen(k) for k in params) and trained_params

    # On the client: frozen parameters are not trained and stay bit-identical; the others train.
    assert len(trained_models) == 2
    for m in trained_models:
        for name, p in m.named_parameters():
            if _frozen(name):
                assert not p.requires_grad and torch.equal(p.detach().cpu(), pretrained[name]), name
        assert any(not torch.equal(p.detach().cpu(), pretrained[n]) for n, p in m.named_parameters()
                   if n.startswith("encoder.encoders.0."))

    # On the server: the merged model keeps every frozen entry bit for bit.
    merged = load_round_checkpoint(out, 1)
    assert set(merged) == set(sent)
    changed = {k for k in sent if not torch.equal(merged[k], pretrained[k])}
    assert all(torch.equal(merged[k], pretrained[k]) for k in sent if _frozen(k))
    assert changed and not any(_frozen(k) for k in changed)
    assert any(k.startswith("encoder.encoders.0.") for k in changed)

    # Costs: the full model down, the trained groups' tensors up, optimizer state for trained only.
    rows = CostLedger(out / "costs.tsv").rows
    assert len(rows) == 2 and not any(r.failed for r in rows)
    state = model.state_dict()
    for r in rows:
        assert r.bytes_down == _bytes(state, sent)
        assert r.bytes_up == _bytes(state, [k for k in sent if not _frozen(k)])
        assert r.bytes_up < r.bytes_down
        assert r.params_trained == sum(state[k].numel() for k in trained_params)
        assert r.params_full == sum(state[k].numel() for k in params)
        # Plain SGD keeps no state: every parameter once, a gradient per trained one.
        assert r.model_state_bytes == _bytes(state, params) + _bytes(state, trained_params)
    results = json.loads((out / "results.json").read_text())
    planned = results["planned_cost_per_client"]
    assert planned["bytes_up"] == rows[0].bytes_up and planned["bytes_down"] == rows[0].bytes_down
    assert planned["params_trained"] == rows[0].params_trained


def test_merge_keeps_entries_no_client_returned_bit_for_bit():
    from espnet_ext.federated.submodel import merge_update

    g = {"a": torch.randn(3, 4), "b": torch.randn(5), "n": torch.tensor(3)}
    clients = [{"a": torch.randn(3, 4)}, {"a": torch.randn(3, 4)}]  # neither returns b or n
    new = merge_update(g, clients, [{}, {}], [1.0, 3.0])
    assert torch.equal(new["b"], g["b"]) and torch.equal(new["n"], g["n"])
    assert torch.allclose(new["a"], (clients[0]["a"] + 3 * clients[1]["a"]) / 4)


def _importance():
    """Ambient sub-modules of both blocks with distinct CER increases, and critical ones."""
    rows = [("encoder.embed", "critical", 80.0), ("encoder.encoders.0.self_attn", "critical", 30.0),
            ("encoder.encoders.0.feed_forward", "ambient", 0.7),
            ("encoder.encoders.1.self_attn", "ambient", 0.2),
            ("encoder.encoders.1.conv_module", "ambient", 0.05),
            ("encoder.encoders.1.feed_forward_macaron", "ambient", 0.2),
            ("encoder.encoders.0.conv_module", "ambient", 1.5),
            ("encoder.after_norm", "ambient", 2.0), ("ctc", "critical", 99.0)]
    return [GroupImportance(g, label, d) for g, label, d in rows]


def test_least_harm_first_orders_ambient_groups_by_cer_increase():
    order = least_harm_first(_importance() + [GroupImportance("decoder.embed", "ambient", math.nan)])
    assert order == ["encoder.encoders.1.conv_module", "encoder.encoders.1.self_attn",
                     "encoder.encoders.1.feed_forward_macaron", "encoder.encoders.0.feed_forward",
                     "encoder.encoders.0.conv_module", "encoder.after_norm", "decoder.embed"]


@pytest.mark.parametrize("metric,field", [("params", "params_trained"), ("bytes", "bytes_up")])
@pytest.mark.parametrize("rate", [0.25, 0.5, 0.75])
def test_frozen_plan_freezes_least_harmful_groups_up_to_the_targeted_cost(info, metric, field, rate):
    importance = _importance()
    targeted = targeted_plan(info, importance, rate)
    target = targeted.cost(info)[field]
    plan = matched_frozen_plan(info, importance, targeted, metric, source="scan.tsv")
    plan.validate(info)
    order = least_harm_first(importance)
    n = len(plan.frozen_groups)
    assert 1 <= n <= len(order) and list(plan.frozen_groups) == order[:n]
    cost = plan.cost(info)
    assert cost[field] <= target
    # One group fewer would cost more than the targeted plan: the closest cost not above it.
    fewer = DropoutPlan("frozen", {}, frozen_groups=plan.frozen_groups[:-1])
    assert fewer.cost(info)[field] > target
    # Frozen groups save upload and training, not download; nothing is dropped.
    assert cost["bytes_down"] == DropoutPlan("none", {}).cost(info)["bytes_down"]
    assert cost["bytes_up"] < cost["bytes_down"] and plan.group_rates == {}
    assert f"matched to targeted on {metric} ({int(cost[field])} vs {int(target)}" in plan.note
    assert f"{n} of {len(order)} ambient groups frozen" in plan.note


def test_frozen_plan_above_the_target_freezes_every_ambient_group_and_records_the_gap(info):
    importance = [GroupImportance("encoder.embed", "critical", 50.0),
                  GroupImportance("encoder.after_norm", "ambient", 0.1),
                  GroupImportance("encoder.encoders.1.norms", "ambient", 0.3)]
    reference = uniform_plan(info, 0.9)
    plan = matched_frozen_plan(info, importance, reference, "params")
    assert plan.frozen_groups == ("encoder.after_norm", "encoder.encoders.1.norms")
    cost, target = plan.cost(info)["params_trained"], reference.cost(info)["params_trained"]
    assert cost > target
    assert f"still above uniform on params with every ambient group frozen ({cost} vs {target}, +" in plan.note
    # A block's norms group holds keys outside its name's prefix; they are frozen too.
    frozen = plan.frozen_keys(info)
    assert "encoder.encoders.1.norm_ff.weight" in frozen and "encoder.after_norm.bias" in frozen


def test_frozen_plan_json_round_trip_and_validation(info, tmp_path):
    plan = DropoutPlan("frozen", {}, note="n", frozen_groups=("encoder.encoders.1",))
    plan.write(tmp_path / "plan.json")
    assert json.loads((tmp_path / "plan.json").read_text())["frozen_groups"] == ["encoder.encoders.1"]
    assert DropoutPlan.read(tmp_path / "plan.json") == plan
    # Plans without frozen groups keep their JSON as before.
    assert "frozen_groups" not in DropoutPlan("none", {}).to_dict()
    with pytest.raises(PlanError, match="unknown frozen layer group 'encoder.encoders.9'"):
        DropoutPlan("frozen", {}, frozen_groups=("encoder.encoders.9",)).validate(info)
    everything = tuple(g for g in info.group_names if g.count(".") <= 2)
    with pytest.raises(PlanError, match="cover every parameter"):
        DropoutPlan("frozen", {}, frozen_groups=everything).validate(info)
    with pytest.raises(PlanError, match="'frozen_groups' must be a list"):
        DropoutPlan.from_dict({"name": "x", "group_rates": {}, "frozen_groups": "encoder.embed"})
    with pytest.raises(PlanError, match="labels no group ambient"):
        matched_frozen_plan(info, [GroupImportance("ctc", "critical", 9.0)], DropoutPlan("none", {}))


def test_fl_simulate_run_writes_the_frozen_row(world, tmp_path, one_thread):
    from espnet_ext.bin.fl_simulate import main

    out = tmp_path / "cli"
    code = main(["run", "--exp_dir", str(world["exp"]), "--model_file", "latest.pth",
                 "--adapt_data", str(world["adapt"]), "--eval_data", f"valid={world['valid']}",
                 "--out_dir", str(out), "--plans", "none,targeted,frozen", "--rate", "0.5",
                 "--scan_tsv", str(world["scan"]), "--rounds", "1", "--clients_per_round", "2",
                 "--batch_size", "3", "--backend", "local", "--no_progress"])
    assert code == 0
    table = (out / "results.md").read_text()
    head = next(line.split("|") for line in table.splitlines() if line.startswith("|model"))
    row = next(line.split("|") for line in table.splitlines() if line.startswith("|frozen|"))
    assert row[:4] == ["", "frozen", "frozen", "1"] and len(row) == len(head)
    assert "|targeted - frozen|valid|CER|" in table
    plan = json.loads((out / "frozen" / "plan.json").read_text())
    assert plan["frozen_groups"] == list(FROZEN) and "matched to targeted on params" in plan["note"]
    results = {p: json.loads((out / p / "results.json").read_text()) for p in ("targeted", "frozen")}
    planned = {p: r["planned_cost_per_client"] for p, r in results.items()}
    assert planned["frozen"]["params_trained"] <= planned["targeted"]["params_trained"]
    assert results["frozen"]["cost"]["bytes_up"] < results["frozen"]["cost"]["bytes_down"]


def test_sweep_runs_the_frozen_plan_at_every_rate():
    from espnet_ext.federated.sweep import rate_plans

    plans = ["none", "uniform", "targeted", "frozen"]
    assert rate_plans([0.25, 0.5], plans) == [(0.25, plans), (0.5, ["uniform", "targeted", "frozen"])]
