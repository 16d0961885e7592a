"""Dropout plans: validation, importance-targeted rates from a scan, uniform plans at equal cost."""

import numpy as np
import pytest
import torch

asr = pytest.importorskip("espnet2.tasks.asr")

from espnet_ext.scan.result import ScanRow, write_tsv  # noqa: E402
from espnet_ext.federated.cost import tensor_bytes  # noqa: E402
from espnet_ext.federated.plan import (  # noqa: E402
    DropoutPlan,
    ModelInfo,
    PlanError,
    matched_uniform_plan,
    read_scan_importance,
    targeted_plan,
    uniform_plan,
)
from espnet_ext.federated.submodel import choose_submodel, extract_submodel  # noqa: E402
from helpers import build_perturbed_model  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_perturbed_model(tmp_path_factory.mktemp("plan"), "norm_conformer", conv_norm_type="group_norm",
                  conv_norm_groups=2, num_blocks=3, linear_units=48)


@pytest.fixture(scope="module")
def info(model):
    return ModelInfo.from_model(model)


def _scan(tmp_path, labels):
    rows = []
    for dataset in ("dev", "test"):
        for group, (label, delta) in labels.items():
            for tau, extra in ((0, 0.0), (2, -0.5)):  # tau 0 is the reference reset
                rows.append(ScanRow(dataset, group, "enc_block", None, None, "reinit", tau, None,
                                    20.0, 10.0 + delta + extra, 0.0, delta + extra,
                                    label if tau == 0 else "ambient"))
    path = tmp_path / "scan.tsv"
    write_tsv(path, rows)
    return path


LABELS = {
    "encoder.embed": ("critical", 50.0),
    "encoder.encoders.0": ("critical", 30.0),
    "encoder.encoders.1": ("ambient", 0.5),
    "encoder.encoders.2": ("ambient", 1.0),
    "encoder.after_norm": ("ambient", 0.0),
    "ctc": ("critical", 80.0),
}


def _sub_cost(model, info, plan, seed=0):
    """Parameters and bytes of a sub-model actually drawn for the plan."""
    sub_plan = choose_submodel(info.modules, plan.module_rates(info.modules),
                               np.random.default_rng(seed), plan.group_norm_policy)
    state = model.state_dict()
    small, _ = extract_submodel({k: state[k] for k in info.sent_keys}, sub_plan)
    return sum(small[k].numel() for k in info.param_keys), tensor_bytes(small)


def test_targeted_plan_drops_only_ambient_groups_with_units(tmp_path, model, info):
    importance, source = read_scan_importance(_scan(tmp_path, LABELS))
    assert "dev" in source and "tau=0" in source
    plan = targeted_plan(info, importance, 0.5, source=source)
    plan.validate(info)
    # after_norm is ambient but has nothing to drop; critical groups are kept whole.
    assert dict(plan.group_rates) == {"encoder.encoders.1": 0.5, "encoder.encoders.2": 0.5}
    rates = plan.module_rates(info.modules)
    assert set(rates) == {f"encoder.encoders.{b}.{s}" for b in (1, 2) for s in
                          ("feed_forward_macaron", "self_attn", "conv_module", "feed_forward")}
    # Scaled mode: the least important droppable group gets the full rate, the most none.
    scaled = targeted_plan(info, importance, 0.4, mode="scaled")
    assert scaled.group_rates["encoder.encoders.1"] == pytest.approx(0.4 * (1 - 0.5 / 30))
    assert "encoder.encoders.0" not in scaled.group_rates
    # A sub-module's rate overrides its block's.
    mixed = DropoutPlan("mixed", {"encoder.encoders.1": 0.5, "encoder.encoders.1.self_attn": 0.0})
    assert "encoder.encoders.1.self_attn" not in mixed.module_rates(info.modules)
    assert mixed.module_rates(info.modules)["encoder.encoders.1.feed_forward"] == 0.5
    # Predicted costs are those of the sub-models actually drawn.
    cost = plan.cost(info)
    assert (cost["params_trained"], cost["bytes_down"]) == _sub_cost(model, info, plan)
    assert 0 < cost["params_fraction"] < 1


@pytest.mark.parametrize("metric", ["params", "bytes"])
def test_uniform_plan_matched_to_the_targeted_cost(tmp_path, model, info, metric):
    importance, _ = read_scan_importance(_scan(tmp_path, LABELS))
    field = "params_trained" if metric == "params" else "bytes_down"
    # Feed-forward units come in fine steps: the costs match closely.
    targeted = targeted_plan(info, importance, 0.5, unit_kinds=("ff",))
    uniform = matched_uniform_plan(info, targeted, metric=metric)
    t, u = targeted.cost(info)[field], uniform.cost(info)[field]
    assert abs(u - t) / t < 0.01, uniform.note
    assert uniform.name == "uniform" and "matched to targeted" in uniform.note
    assert uniform.unit_kinds == ("ff",)
    # Uniform spreads the same budget over every block, encoder and decoder.
    assert set(uniform.group_rates) == {"encoder.encoders.0", "encoder.encoders.1",
                                        "encoder.encoders.2", "decoder.decoders.0"}
    assert len(set(uniform.group_rates.values())) == 1
    assert _sub_cost(model, info, uniform, seed=3)[0 if metric == "params" else 1] == u

    # With heads (2 per module here) and whole norm groups, steps are coarse: the match is the
    # closest any uniform rate gets, and the note reports the gap.
    targeted = targeted_plan(info, importance, 0.5)
    uniform = matched_uniform_plan(info, targeted, metric=metric)
    t, u = targeted.cost(info)[field], uniform.cost(info)[field]
    rate = next(iter(uniform.group_rates.values()))
    for other in (rate - 0.05, rate + 0.05, rate - 0.1, rate + 0.1):
        if 0 <= other < 1:
            c = uniform_plan(info, other).cost(info)[field]
            assert abs(c - t) >= abs(u - t)
    assert f"{100 * (u - t) / t:+.2f}%" in uniform.note
    # Matching within the encoder only (where a CTC-scored scan can target).
    enc = matched_uniform_plan(info, targeted_plan(info, importance, 0.5, unit_kinds=("ff",)),
                               metric=metric, stacks=("encoder",))
    assert set(enc.group_rates) == {"encoder.encoders.0", "encoder.encoders.1", "encoder.encoders.2"}
    assert "every encoder block" in enc.note


def test_plan_validation_errors(tmp_path, info):
    with pytest.raises(PlanError, match=r"rate of group 'encoder.encoders.1' is 1.0; rates must be in \[0, 1\)"):
        DropoutPlan("p", {"encoder.encoders.1": 1.0}).validate(info)
    with pytest.raises(PlanError, match=r"must be in \[0, 1\)"):
        DropoutPlan("p", {"encoder.encoders.1": -0.1}).validate(info)
    with pytest.raises(PlanError, match="unknown layer group 'encoder.encoders.9'"):
        DropoutPlan("p", {"encoder.encoders.9": 0.5}).validate(info)
    with pytest.raises(PlanError, match="'ctc' has no droppable units"):
        DropoutPlan("p", {"ctc": 0.5}).validate(info)
    with pytest.raises(PlanError, match="unknown unit kind 'neurons'"):
        DropoutPlan("p", {}, unit_kinds=("neurons",)).validate(info)
    with pytest.raises(PlanError, match=r"uniform plan: dropout rate must be in \[0, 1\)"):
        uniform_plan(info, 1.5)
    with pytest.raises(PlanError, match="stacks must be encoder and/or decoder"):
        uniform_plan(info, 0.5, stacks=("ctc",))
    none_ambient = {g: ("critical", 5.0) for g in LABELS}
    importance, _ = read_scan_importance(_scan(tmp_path, none_ambient))
    with pytest.raises(PlanError, match="labels no group ambient .*relax the ambient threshold"):
        targeted_plan(info, importance, 0.5)
    other_arch = read_scan_importance(_scan(tmp_path, {"encoder.encoders.7": ("ambient", 0.0)}))[0]
    with pytest.raises(PlanError, match="same architecture"):
        targeted_plan(info, other_arch, 0.5)
    with pytest.raises(PlanError, match="no rows for dataset 'eval'"):
        read_scan_importance(tmp_path / "scan.tsv", dataset="eval")
    with pytest.raises(PlanError, match="not found"):
        read_scan_importance(tmp_path / "missing.tsv")


def test_plan_round_trips_through_json(tmp_path, info):
    plan = uniform_plan(info, 0.25, unit_kinds=("ff",), group_norm_policy="per_group")
    plan.write(tmp_path / "plan.json")
    assert DropoutPlan.read(tmp_path / "plan.json") == DropoutPlan.from_dict(plan.to_dict())
    assert DropoutPlan.read(tmp_path / "plan.json").module_rates(info.modules) == plan.module_rates(info.modules)


def test_sent_entries_are_parameters_and_norm_statistics(info):
    assert "frontend.logmel.melmat" not in info.sent_keys
    assert set(info.param_keys) <= set(info.sent_keys)
    assert info.num_params == sum(int(np.prod(info.shapes[k])) for k in info.param_keys)
    assert torch.Size(info.shapes["encoder.encoders.0.feed_forward.w_1.weight"]) == (48, 16)


def test_plan_json_with_an_unknown_key_is_refused_naming_key_file_and_allowed_keys(tmp_path):
    # A misspelt "group_rates" used to load as a plan without dropout.
    path = tmp_path / "my_plan.json"
    path.write_text('{"name": "x", "rates": {"encoder.encoders.1": 0.5}}')
    with pytest.raises(PlanError) as e:
        DropoutPlan.read(path)
    message = str(e.value)
    assert "unknown key 'rates'" in message and str(path) in message
    assert "allowed keys: name, group_rates, unit_kinds, group_norm_policy, note" in message
    path.write_text('{"name": "x"}')
    with pytest.raises(PlanError, match="has no 'group_rates'"):
        DropoutPlan.read(path)
    path.write_text('{"name": "x", "group_rates": {}, "unit_kinds": "ff"}')
    with pytest.raises(PlanError, match="'unit_kinds' must be a list of strings"):
        DropoutPlan.read(path)
    path.write_text('[1, 2]')
    with pytest.raises(PlanError, match="JSON object with keys"):
        DropoutPlan.read(path)
    with pytest.raises(PlanError, match="plan file .*missing.json not found"):
        DropoutPlan.read(tmp_path / "missing.json")
    path.write_text('{"name": "x", "group_rates": {}}')
    assert DropoutPlan.read(path).group_rates == {}  # explicit no dropout is fine
