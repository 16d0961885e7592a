"""Option parsing of the recipe scripts (common.sh's parse_options/parse_known_options): each
script's own options are set, everything else reaches the script it runs, in order."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "egs2" / "TEMPLATE" / "asr1"
# Stands in for the script a recipe script runs: prints one argument per line.
ECHO_ARGS = '#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n'


def _run(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60)


def _recipe_copy(tmp_path: Path, corpus: str, scripts, stand_in: str) -> Path:
    """egs2/<corpus>/asr1 with copies of `scripts`, the real common.sh and `stand_in` (in the recipe,
    or TEMPLATE's asr.sh) replaced by an argument printer."""
    template = tmp_path / "egs2" / "TEMPLATE" / "asr1"
    template.mkdir(parents=True)
    os.symlink(TEMPLATE / "common.sh", template / "common.sh")
    recipe = tmp_path / "egs2" / corpus / "asr1"
    recipe.mkdir(parents=True)
    for name in scripts:
        (recipe / name).write_text((REPO / "egs2" / corpus / "asr1" / name).read_text())
        (recipe / name).chmod(0o755)
    fake = template / "asr.sh" if stand_in == "asr.sh" else recipe / stand_in
    fake.write_text(ECHO_ARGS)
    fake.chmod(0o755)
    return recipe


def _value(args, option: str) -> str:
    return args[args.index(option) + 1]


def test_parse_known_options_keeps_undeclared_options_with_their_values_in_order(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text(f""". {TEMPLATE / "common.sh"}
set -euo pipefail
begin_options
mine=default
help_message="usage: s.sh"
parse_known_options "$@"
echo "mine=$mine"
printf '%s\\n' "${{positional[@]}}"
""")
    proc = subprocess.run(["bash", str(script), "--stage", "5", "--mine", "x", "--fl_args", "--rounds 2",
                           "word", "--last"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["mine=x", "--stage", "5", "--fl_args", "--rounds 2", "word", "--last"]
    strict = script.read_text().replace("parse_known_options", "parse_options")
    script.write_text(strict)
    proc = subprocess.run(["bash", str(script), "--stage", "5"], capture_output=True, text=True)
    assert proc.returncode == 1 and "unknown option '--stage'" in proc.stderr


def test_own_corpus_run_sh_sets_its_options_and_passes_the_others_to_the_stage_driver(tmp_path):
    recipe = _recipe_copy(tmp_path, "own_corpus", ["run.sh"], "asr.sh")
    proc = _run(recipe / "run.sh", "--train_dir", "/c/train", "--stage", "5", "--fl_args", "--rounds 2",
                "--valid_dir", "/c/dev", "--test_dirs", "/c/eval other=/c/x", "--import_opts",
                "--extract_audio true", "--nbpe", "100")
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.splitlines()
    assert _value(args, "--local_data_opts") == (
        "--extract_audio true --train_dir /c/train --valid_dir /c/dev --test_dirs /c/eval,other=/c/x")
    assert _value(args, "--test_sets") == "eval other"
    # The recipe's defaults first, then the other options as given (the last of a repeated one wins).
    assert args[args.index("--scan_taus") + 2:] == ["--stage", "5", "--fl_args", "--rounds 2", "--nbpe", "100"]
    assert "--train_dir" not in args and "--import_opts" not in args

    proc = _run(recipe / "run.sh", "--help")
    assert proc.returncode == 0 and "--train_dir DIR" in proc.stdout and "--stage" not in proc.stdout
    proc = _run(recipe / "run.sh", "--train_dir")
    assert proc.returncode == 1 and "option --train_dir needs a value" in proc.stderr


def test_synth_en_study_scripts_pass_options_to_run_sh(tmp_path):
    recipe = _recipe_copy(tmp_path, "synth_en", ["run_stability.sh", "run_depth.sh"], "run.sh")
    (recipe / "conf").mkdir()
    (recipe / "conf" / "extra.yaml").write_text("{}\n")
    proc = _run(recipe / "run_stability.sh", "--stage", "6", "--add_configs", "conf/extra.yaml", "--seeds", "1")
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.splitlines()
    assert _value(args, "--asr_configs").endswith("conf/train_asr_conformer_gn_small.yaml conf/extra.yaml")
    assert args[args.index("--stop_stage") + 2:] == ["--stage", "6", "--seeds", "1"]
    proc = _run(recipe / "run_stability.sh", "--add_configs", "conf/missing.yaml")
    assert proc.returncode == 1 and "--add_configs: no config file conf/missing.yaml" in proc.stderr

    proc = _run(recipe / "run_depth.sh", "--stop_stage", "4", "--seeds", "1")
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.splitlines()
    assert _value(args, "--asr_configs").split()[0] == "conf/depth/train_asr_conformer_4x64.yaml"
    assert args[-4:] == ["--stop_stage", "4", "--seeds", "1"]
    assert "The depth sweep" in _run(recipe / "run_depth.sh", "--help").stdout

    # Stage 7: after run.sh, one depth analysis per reset the scans hold (tau 0, mid tau, re-randomization).
    python = tmp_path / "python"
    python.write_text('#!/usr/bin/env bash\necho "python $*"\n')
    python.chmod(0o755)
    proc = _run(recipe / "run_depth.sh", "--stage", "7", "--python", str(python))
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.splitlines()
    assert _value(args, "--scan_taus") == "0,10"
    calls = [line for line in args if line.startswith("python -m espnet_ext.bin.layer_analysis depth")]
    assert len(calls) == 3
    assert calls[0].endswith("--out_dir exp/analysis_depth_dev") and "--tau" not in calls[0]
    assert "--tau 10 " in calls[1] and calls[1].endswith("--out_dir exp/analysis_depth_dev_tau10")
    assert "--mode rerandomize " in calls[2] and calls[2].endswith("--out_dir exp/analysis_depth_dev_rerandomize")
