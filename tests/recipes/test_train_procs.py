"""Stage 4's training call: ``--train_procs`` (a training as several CPU processes, torchrun and
gloo, each with its share of the training's threads), the memory allocator (``--cpu_allocator``)
and the log of a resumed training. The
interpreter is a stand-in that records how it was called."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ASR_SH = REPO / "egs2" / "TEMPLATE" / "asr1" / "asr.sh"
# Records its arguments and thread settings, one per line, in the training log (stdout).
RECORDING_PYTHON = ('#!/usr/bin/env bash\necho "OMP_NUM_THREADS=${OMP_NUM_THREADS}"\nprintf "%s\\n" "$@"\n'
                    'echo "LD_PRELOAD=${LD_PRELOAD:-}"\n')


def _stage4(tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    """Runs stage 4 alone in a scratch recipe dir whose stage 3 is marked done."""
    work = tmp_path / "recipe"
    (work / "exp" / "asr_stats_bpe50").mkdir(parents=True, exist_ok=True)
    (work / "exp" / "asr_stats_bpe50" / ".done").write_text("train\n")
    (work / "train.yaml").write_text("{}\n")
    python = tmp_path / "python"
    python.write_text(RECORDING_PYTHON)
    python.chmod(0o755)
    return subprocess.run(
        ["bash", str(ASR_SH), "--stage", "4", "--stop_stage", "4", "--train_set", "train",
         "--valid_set", "dev", "--asr_configs", "train.yaml", "--python", str(python), *options],
        cwd=work, capture_output=True, text=True, timeout=60)


def _train_call(tmp_path: Path) -> list:
    return (tmp_path / "recipe" / "exp" / "asr_train_seed1" / "train.log").read_text().splitlines()


def test_train_procs_runs_one_training_as_cpu_processes_under_torchrun_with_gloo(tmp_path):
    proc = _stage4(tmp_path, "--train_procs", "2", "--num_threads", "4")
    assert proc.returncode == 0, proc.stderr
    call = _train_call(tmp_path)
    assert call[0] == "OMP_NUM_THREADS=2"  # 4 threads shared by 2 processes
    launcher = call[1:call.index("espnet_ext.bin.asr_train")]
    assert launcher == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    args = call[call.index("espnet_ext.bin.asr_train"):]
    assert args[args.index("--ngpu") + 1] == "0"
    assert args[args.index("--dist_backend") + 1] == "gloo"
    assert args[args.index("--multiprocessing_distributed") + 1] == "false"
    assert "2 processes x 2 thread(s)" in proc.stdout + proc.stderr


def test_one_process_by_default_and_train_procs_refused_with_gpus(tmp_path):
    proc = _stage4(tmp_path, "--num_threads", "2")
    assert proc.returncode == 0, proc.stderr
    call = _train_call(tmp_path)
    assert call[0] == "OMP_NUM_THREADS=2"
    assert call[1:3] == ["-m", "espnet_ext.bin.asr_train"]
    assert "--dist_backend" not in call and "torch.distributed.run" not in call

    proc = _stage4(tmp_path, "--train_procs", "2", "--ngpu", "1")
    assert proc.returncode != 0 and "with GPUs, --ngpu N trains with N processes" in proc.stderr
    proc = _stage4(tmp_path, "--train_procs", "two")
    assert proc.returncode != 0 and "--train_procs must be a positive integer" in proc.stderr


def test_a_resumed_training_adds_to_its_log(tmp_path):
    """An interrupted training (checkpoint.pth, no .done) resumes with its earlier log kept."""
    assert _stage4(tmp_path, "--num_threads", "2").returncode == 0
    run = tmp_path / "recipe" / "exp" / "asr_train_seed1"
    first = (run / "train.log").read_text()
    (run / ".done").unlink()  # as if killed before the end
    (run / "checkpoint.pth").write_bytes(b"")
    proc = _stage4(tmp_path, "--num_threads", "2")
    assert proc.returncode == 0, proc.stderr
    log = (run / "train.log").read_text()
    assert log.startswith(first)
    resumed = log[len(first):].splitlines()
    assert resumed[0].startswith("# ") and resumed[0].endswith("resumed from exp/asr_train_seed1/checkpoint.pth")
    assert resumed[1] == "OMP_NUM_THREADS=2" and "--resume" in resumed
    # A training that starts afresh replaces its log.
    (run / ".done").unlink()
    (run / "checkpoint.pth").unlink()
    assert _stage4(tmp_path, "--num_threads", "2").returncode == 0
    assert (run / "train.log").read_text() == first


def _tcmalloc() -> str:
    """The library asr.sh finds (common.sh's tcmalloc_library), '' when not installed."""
    common = REPO / "egs2" / "TEMPLATE" / "asr1" / "common.sh"
    return subprocess.run(["bash", "-c", f". {common} && tcmalloc_library"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_processes_allocate_with_tcmalloc_unless_told_otherwise(tmp_path):
    lib = _tcmalloc()
    if not lib:
        pytest.skip("libtcmalloc-minimal4 is not installed (tools/install.sh installs it)")
    assert _stage4(tmp_path, "--num_threads", "2").returncode == 0
    run = tmp_path / "recipe" / "exp" / "asr_train_seed1"
    assert _train_call(tmp_path)[-1] == f"LD_PRELOAD={lib}"
    # The replay script sets it too, so a replay times like the run.
    assert f"export LD_PRELOAD={lib} " in (run / "train.sh").read_text()

    (run / ".done").unlink()
    assert _stage4(tmp_path, "--num_threads", "2", "--cpu_allocator", "system").returncode == 0
    assert _train_call(tmp_path)[-1] == "LD_PRELOAD="
    assert "LD_PRELOAD" not in (run / "train.sh").read_text()
    proc = _stage4(tmp_path, "--cpu_allocator", "jemalloc")
    assert proc.returncode != 0 and "--cpu_allocator must be tcmalloc or system, got jemalloc" in proc.stderr
