"""The layer-reset scan: exact baselines, prefix reuse, untouched model, outputs, resume, errors."""

import json
import shutil

import pytest
import torch
import yaml

from helpers import make_tone_data_dir, tiny_asr_config, train_tiny_model, write_char_token_list

asr = pytest.importorskip("espnet2.tasks.asr")

from espnet_ext.experiment.experiment_dir import ExperimentError  # noqa: E402
from espnet_ext.scan.scanner import ScanError, ScanOptions, run_scan  # noqa: E402
from espnet_ext.layers import ArchitectureMismatchError, LayerMapError  # noqa: E402

EPOCHS = 30


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model that has memorized its 6 training utterances (CER well below 100%)."""
    exp, train = train_tiny_model(tmp_path_factory.mktemp("scan"), max_epoch=EPOCHS)
    return exp, train


def _opts(trained, out, **kw):
    exp, data = trained
    base = dict(exp_dir=exp, data_dirs=[data], out_dir=out, model_file=f"checkpoints/{EPOCHS}epoch.pth",
                taus=["0", "last"], batch_size=4, progress=False)
    base.update(kw)
    return ScanOptions(**base)


def _load(exp, tau=EPOCHS, decode_options=None):
    from espnet_ext.experiment.experiment_dir import build_model
    from espnet_ext.layers import load_state_dict_file

    path = exp / "checkpoints" / f"{tau}epoch.pth"
    return build_model(exp / "config.yaml", load_state_dict_file(path), str(path), "cpu", decode_options)


def _evaluator(trained, reuse="prefix", batch_size=4):
    from espnet_ext.evaluation.decoders import CtcGreedyDecoder
    from espnet_ext.evaluation.eval_data import load_eval_set
    from espnet_ext.evaluation.evaluator import Evaluator

    exp, data = trained
    model, _ = _load(exp)
    return Evaluator(model, [load_eval_set(data)], CtcGreedyDecoder(model, "char", None),
                     batch_size=batch_size, reuse=reuse)


def test_scan_outputs_exact_baseline_at_final_tau_and_labels(trained, tmp_path):
    out = tmp_path / "scan"
    result = run_scan(_opts(trained, out))
    base = result.baseline["train"]
    assert 0 < base["CER"] < 60  # a real model, not an all-blank one

    names = ["encoder.embed", "encoder.encoders.0", "encoder.encoders.1", "encoder.after_norm", "ctc"]
    lines = (out / "scan.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["dataset", "group", "kind", "block", "depth", "mode", "tau", "seed",
                                    "WER", "CER", "delta_WER", "delta_CER", "label", "n_utts",
                                    "delta_WER_lo", "delta_WER_hi", "delta_CER_lo", "delta_CER_hi",
                                    "label_ci"]
    rows = [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]
    assert [r["group"] for r in rows] == [n for n in names for _ in range(3)]  # tau 0, tau 30, seed
    for r in rows:
        if r["tau"] == str(EPOCHS):  # the scanned weights themselves: the baseline, exactly
            assert (float(r["WER"]), float(r["CER"])) == (base["WER"], base["CER"])
            assert r["label"] == "ambient"
    reinit0 = {r["group"]: r for r in rows if r["tau"] == "0"}
    assert float(reinit0["ctc"]["CER"]) > base["CER"] + 10  # resetting the output layer hurts
    assert reinit0["ctc"]["label"] == "critical"
    assert {r["seed"] for r in rows if r["mode"] == "rerandomize"} == {"4"}  # training seed 3 + 1
    # Decoder layers cannot change greedy CTC output: not scanned, and said so.
    meta = json.loads((out / "scan.json").read_text())
    assert set(meta["excluded_groups"]) == {"decoder.embed", "decoder.decoders.0",
                                            "decoder.after_norm", "decoder.output_layer"}
    assert meta["baseline"]["train"]["CER"] == pytest.approx(base["CER"])
    assert meta["status"] == "done"
    assert (meta["granularity"], meta["scoring"], meta["datasets"]) == ("block", "ctc_greedy", ["train"])
    from espnet_ext.scan.result import ScanResult

    stored = ScanResult.load(out)  # what readers of the scan dir see: the rows and summary as run
    assert stored.rows == result.rows and stored.summary == result.summary
    assert stored.reference_variant("train") == ("reinit", 0)
    ambient = [r["group"] for r in reinit0.values() if r["label"] == "ambient"]
    assert result.summary[0].startswith(f"train: {len(ambient)} of 5 groups ambient (reinit to tau=0")
    md = (out / "scan.md").read_text()
    assert result.summary[0] in md and "| `encoder.encoders.1` | enc_block | 0.50 |" in md
    for png in ("heatmap_reinit_train.png", "heatmap_rerandomize_train.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert len((out / "baseline" / "train" / "text").read_text().splitlines()) == 6

    # Interrupted after some variants: only the missing ones are computed again.
    (out / "scan.tsv").write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:7])  # cut mid-line
    resumed = run_scan(_opts(trained, out))
    assert resumed.computed == 2
    assert (out / "scan.tsv").read_text().splitlines() == lines
    # A finished scan is not recomputed; new thresholds only relabel.
    from espnet_ext.scan.labels import AmbientCriterion

    again = run_scan(_opts(trained, out, criterion=AmbientCriterion("cer", 1000.0, None)))
    assert again.computed == 0
    assert all(r.label == "ambient" for r in again.rows)
    # Score-changing options must match the scan already there.
    with pytest.raises(ScanError, match="another batch_size"):
        run_scan(_opts(trained, out, batch_size=2))


def test_prefix_reuse_gives_the_uncached_results(trained):
    from espnet_ext.scan.scanner import group_level
    from espnet_ext.layers import build_layer_map, load_state_dict_file

    exp, _ = trained
    cached, uncached = _evaluator(trained, "prefix"), _evaluator(trained, "none")
    assert cached.stages.block_reuse
    ckpt0 = load_state_dict_file(exp / "checkpoints" / "0epoch.pth")
    layer_map = build_layer_map(cached.model, "submodule")
    levels = set()
    for group in layer_map:
        if group.stack == "decoder":
            continue
        level = group_level(group, 2)
        levels.add(level)
        values = {k: ckpt0[k] for k in group.keys}
        assert cached.hypotheses(level, values) == uncached.hypotheses(level, values), group.name
        a, b = cached.encoder_outputs(level, values), uncached.encoder_outputs(level, values)
        for utt in a["train"]:
            torch.testing.assert_close(a["train"][utt], b["train"][utt], rtol=1e-5, atol=1e-6)
    assert levels == {-1, 0, 1, 2, 3}  # embed, both blocks, final norm, ctc
    # ... and the trained model itself equals ESPnet's own encode(), utterance by utterance
    # (unpadded: ESPnet's Conformer output depends on a batch's padding).
    single = _evaluator(trained, batch_size=1)
    model = single.model
    outs = single.encoder_outputs()["train"]
    data = single.sets[0]
    for utt, audio in zip(data.keys, data.audio):
        speech = torch.as_tensor(audio).unsqueeze(0)
        with torch.no_grad():
            enc, lens = model.encode(speech, torch.tensor([speech.size(1)]))
        torch.testing.assert_close(outs[utt], enc[0, : int(lens[0])], rtol=1e-4, atol=1e-4)


def test_model_is_bit_identical_after_a_scan(trained):
    from espnet_ext.layers import build_layer_map, load_state_dict_file

    exp, _ = trained
    ev = _evaluator(trained, batch_size=2)
    before = {k: v.clone() for k, v in ev.model.state_dict().items()}
    base = ev.hypotheses()
    ckpt0 = load_state_dict_file(exp / "checkpoints" / "0epoch.pth")
    changed = 0
    for group in build_layer_map(ev.model, "block"):
        if group.stack != "decoder":
            hyps = ev.hypotheses(-1, {k: ckpt0[k] for k in group.keys})
            changed += hyps != base
    assert changed >= 2  # the variants really were evaluated with other weights
    after = ev.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert ev.hypotheses() == base


def test_beam_scoring_matches_espnet_inference_and_scans_the_decoder(trained, tmp_path):
    exp, data = trained
    decode = {"beam_size": 2, "ctc_weight": 0.3, "lm_weight": 0.0, "nbest": 1}
    conf = tmp_path / "decode.yaml"
    conf.write_text(yaml.safe_dump(decode))
    out = tmp_path / "beam"
    result = run_scan(_opts(trained, out, scoring="beam", decode_config=conf, batch_size=1,
                            groups=["decoder.decoders.0"], modes=["reinit"]))
    assert [(r.group, r.tau) for r in result.rows] == [("decoder.decoders.0", 0),
                                                       ("decoder.decoders.0", EPOCHS)]
    assert result.rows[1].cer == pytest.approx(result.baseline["train"]["CER"])
    # The baseline hypotheses are ESPnet's Speech2Text's, utterance by utterance.
    from espnet2.bin.asr_inference import Speech2Text

    from espnet_ext.evaluation.eval_data import load_eval_set

    s2t = Speech2Text(asr_train_config=str(exp / "config.yaml"),
                      asr_model_file=str(exp / "checkpoints" / f"{EPOCHS}epoch.pth"), **decode)
    ours = dict(line.split(" ", 1) if " " in line else (line, "")
                for line in (out / "baseline" / "train" / "text").read_text().splitlines())
    ds = load_eval_set(data)
    for utt, audio in zip(ds.keys, ds.audio):
        assert ours[utt] == (s2t(audio)[0][0] or ""), utt


def test_cli_prints_the_summary(trained, tmp_path, capsys):
    from espnet_ext.bin.layer_scan import main

    exp, data = trained
    out = tmp_path / "cli"
    rc = main(["--exp_dir", str(exp), "--data_dir", str(data), "--out_dir", str(out),
               "--model_file", f"checkpoints/{EPOCHS}epoch.pth", "--granularity", "pattern",
               "--pattern", r"encoder\.encoders\.(\d+)\.conv_module", "--modes", "reinit",
               "--taus", "0", "--no_progress"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert printed.startswith("train: ") and "of 2 groups ambient" in printed
    assert (out / "scan.md").is_file()


def test_clear_errors(trained, tmp_path, capsys):
    exp, data = trained
    with pytest.raises(ExperimentError, match=r"tau=99 was not saved.*taus: 0, 1, 2, .*, 30\b"):
        run_scan(_opts(trained, tmp_path / "a", taus=["99"]))
    with pytest.raises(LayerMapError, match="unknown granularity 'layer'"):
        run_scan(_opts(trained, tmp_path / "b", granularity="layer"))
    with pytest.raises(LayerMapError, match="matches no state-dict key"):
        run_scan(_opts(trained, tmp_path / "c", granularity="pattern", patterns=["encoder\\.nothing"]))
    with pytest.raises(ScanError, match="use --scoring beam"):
        run_scan(_opts(trained, tmp_path / "d", groups=["decoder.decoders.0"]))
    with pytest.raises(ExperimentError, match="model file 'nope.pth' not found.*available: .*latest.pth"):
        run_scan(_opts(trained, tmp_path / "e", model_file="nope.pth"))

    # A copy of the run without checkpoint 0, and one with a checkpoint of another shape.
    copy = tmp_path / "exp_copy"
    shutil.copytree(exp, copy)
    state = torch.load(copy / "checkpoints" / "1epoch.pth")
    state["encoder.encoders.1.feed_forward.w_2.weight"] = torch.zeros(16, 64)
    torch.save(state, copy / "checkpoints" / "1epoch.pth")
    with pytest.raises(ArchitectureMismatchError,
                       match=r"1epoch.pth.*encoder.encoders.1.feed_forward.w_2.weight"):
        run_scan(_opts((copy, data), tmp_path / "f", taus=["1"], modes=["reinit"]))
    # Checkpoint 0 neither saved nor reconstructable (config.yaml without its seed).
    (copy / "checkpoints" / "0epoch.pth").unlink()
    config = yaml.safe_load((copy / "config.yaml").read_text())
    del config["seed"]
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ExperimentError,
                       match=r"checkpoint 0 .*cannot be reconstructed.*no seed.*python -m espnet_ext.bin.asr_train"):
        run_scan(_opts((copy, data), tmp_path / "g"))

    from espnet_ext.bin.layer_scan import main

    rc = main(["--exp_dir", str(copy), "--data_dir", str(data), "--model_file",
               f"checkpoints/{EPOCHS}epoch.pth", "--no_progress"])
    assert rc == 1 and "checkpoint 0 (the initial weights) is not saved" in capsys.readouterr().err


@pytest.mark.parametrize("encoder,conf,block_reuse", [
    ("norm_conformer", {"conv_norm_type": "group_norm"}, True),
    ("conformer", {"interctc_layer_idx": [1], "interctc_use_conditioning": True}, False),
])
def test_prefix_reuse_on_other_encoders(tmp_path, encoder, conf, block_reuse):
    """Padding-aware group-norm Conformer: blocks reused; CTC-conditioned blocks: safe fallback."""
    from espnet_ext.asr.registration import register_encoders
    register_encoders()
    from espnet_ext.evaluation.decoders import CtcGreedyDecoder
    from espnet_ext.evaluation.eval_data import load_eval_set
    from espnet_ext.evaluation.evaluator import Evaluator

    tokens = write_char_token_list(tmp_path / "tokens.txt")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_asr_config(encoder, **conf)))
    args = asr.ASRTask.get_parser().parse_args(
        ["--config", str(config), "--token_type", "char", "--token_list", str(tokens)])
    torch.manual_seed(0)
    model = asr.ASRTask.build_model(args).eval()
    data = [load_eval_set(make_tone_data_dir(tmp_path, "dev", n_utts=5, seed=2))]
    cached = Evaluator(model, data, CtcGreedyDecoder(model, "char", None), batch_size=3)
    uncached = Evaluator(model, data, CtcGreedyDecoder(model, "char", None), batch_size=3, reuse="none")
    assert cached.stages.block_reuse is block_reuse
    key = "encoder.encoders.1.feed_forward.w_1.weight"
    values = {key: torch.randn_like(model.state_dict()[key])}
    a, b = cached.encoder_outputs(1, values)["dev"], uncached.encoder_outputs(1, values)["dev"]
    assert a.keys() == b.keys()
    for utt in a:
        torch.testing.assert_close(a[utt], b[utt], rtol=1e-5, atol=1e-6)
    assert cached.hypotheses(1, values) == uncached.hypotheses(1, values)


def test_counts_file_cut_by_an_interruption_resumes_without_losing_the_next_record(tmp_path):
    """A kill mid-write leaves a cut last line in utt_errors.jsonl: it is dropped on load, and the
    next record starts a line of its own (it used to be glued to the cut line and lost)."""
    import json

    from espnet_ext.scan.utt_errors import UttErrors

    path = tmp_path / "utt_errors.jsonl"
    rec = {"dataset": "dev", "group": "g", "mode": "reinit", "value": 0, "idx": [0], "w": [1], "c": [2]}
    path.write_text(json.dumps(rec) + "\n" + '{"dataset": "dev", "gro', encoding="utf-8")
    UttErrors(path).append({**rec, "group": "h"})
    assert sorted(k[1] for k in UttErrors(path).variants) == ["g", "h"]


def test_trained_pass_runs_from_the_prefix_cache_with_the_same_hypotheses(trained):
    from espnet_ext.evaluation.encoder_stages import LEVEL_FEATS

    cached, uncached = _evaluator(trained), _evaluator(trained, reuse="none")
    assert cached.stages.block_reuse
    baseline = cached.hypotheses(LEVEL_FEATS)
    assert baseline == uncached.hypotheses(LEVEL_FEATS)
    # The baseline left every batch's input-layer output in the cache for the variants.
    assert all(level == 0 for levels in cached._levels for level in levels)
    key = next(k for k in cached.model.state_dict() if k.startswith("encoder.encoders.0.") and k.endswith("weight"))
    values = {key: torch.zeros_like(cached.model.state_dict()[key])}
    assert cached.hypotheses(0, values) == uncached.hypotheses(0, values)
    # Later trained passes start from wherever the cache has advanced to, with the same result.
    assert cached.hypotheses(LEVEL_FEATS) == baseline
    (name, a), = cached.encoder_outputs(LEVEL_FEATS).items()
    b = uncached.encoder_outputs(LEVEL_FEATS)[name]
    assert a.keys() == b.keys()
    for utt in a:
        torch.testing.assert_close(a[utt], b[utt], rtol=1e-5, atol=1e-6)
