"""Importing existing Kaldi dirs into a recipe (espnet_ext.data.import_dirs, own_corpus local/data.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import make_tone_data_dir

from espnet_ext.bin import import_data_dirs as import_cli
from espnet_ext.data.import_dirs import import_data_dir, import_data_dirs
from espnet_ext.data.kaldi import DataDirError, read_kaldi_map
from espnet_ext.data.validate import validate_data_dir

REPO = Path(__file__).resolve().parents[2]


def _write_dir(d: Path, files: dict) -> Path:
    d.mkdir(parents=True)
    for name, lines in files.items():
        (d / name).write_text("".join(f"{line}\n" for line in lines))
    return d


def _long_recording(path: Path, seconds: float = 2.0, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def test_copy_makes_audio_paths_absolute_and_rerun_is_noop(tmp_path, monkeypatch):
    src = make_tone_data_dir(tmp_path / "corpus", "train", n_utts=4)
    # Relative audio paths, taken from the directory the import runs in (as validation takes them).
    wav_scp = read_kaldi_map(src / "wav.scp")
    (src / "wav.scp").write_text("".join(f"{u} {os.path.relpath(p, tmp_path)}\n" for u, p in wav_scp.items()))
    monkeypatch.chdir(tmp_path)
    summary = import_data_dir(src, tmp_path / "recipe" / "data" / "train")
    assert (summary.num_utterances, summary.num_speakers) == (4, 2)
    dst = tmp_path / "recipe" / "data" / "train"
    assert read_kaldi_map(dst / "wav.scp") == wav_scp  # absolute again
    assert read_kaldi_map(dst / "text") == read_kaldi_map(src / "text")

    mtime = (dst / "text").stat().st_mtime_ns
    import_data_dir(src, dst)
    assert (dst / "text").stat().st_mtime_ns == mtime
    other = make_tone_data_dir(tmp_path / "corpus2", "train", n_utts=2)
    with pytest.raises(DataDirError, match=rf"already exists and was imported from {src}.*rm -r"):
        import_data_dir(other, dst)


def test_link_mode_links_and_never_writes_into_the_source(tmp_path):
    src = make_tone_data_dir(tmp_path / "corpus", "dev", n_utts=2)
    before = sorted(p.name for p in src.iterdir())
    import_data_dir(src, tmp_path / "data" / "dev", mode="link")
    assert (tmp_path / "data" / "dev").is_symlink()
    assert sorted(p.name for p in src.iterdir()) == before
    import_data_dir(src, tmp_path / "data" / "dev", mode="link")  # re-run: kept


def test_existing_hand_written_dir_is_not_overwritten(tmp_path):
    src = make_tone_data_dir(tmp_path / "corpus", "train", n_utts=2)
    mine = make_tone_data_dir(tmp_path / "data", "train", n_utts=2, seed=5)
    text = (mine / "text").read_text()
    with pytest.raises(DataDirError, match="already exists and was not made by an import"):
        import_data_dir(src, mine)
    assert (mine / "text").read_text() == text


def test_segments_are_refused_with_the_fix_and_extracted_when_asked(tmp_path):
    rec = _long_recording(tmp_path / "meeting.wav")
    src = _write_dir(tmp_path / "seg", {
        "wav.scp": [f"meeting {rec}"],
        "segments": ["spk1-a meeting 0.00 0.50", "spk1-b meeting 0.50 1.25", "spk2-c meeting 1.25 -1"],
        "text": ["spk1-a HELLO", "spk1-b GOOD DAY", "spk2-c BYE"],
        "utt2spk": ["spk1-a spk1", "spk1-b spk1", "spk2-c spk2"],
        "spk2utt": ["spk1 spk1-a spk1-b", "spk2 spk2-c"],
    })
    with pytest.raises(DataDirError, match=r"segments file .*`sound` loader.*--extract_audio true"):
        import_data_dir(src, tmp_path / "data" / "train")
    assert not (tmp_path / "data" / "train").exists()

    import_data_dir(src, tmp_path / "data" / "train", extract_audio=True)
    dst = tmp_path / "data" / "train"
    assert not (dst / "segments").exists()
    wav_scp = read_kaldi_map(dst / "wav.scp")
    assert sorted(wav_scp) == ["spk1-a", "spk1-b", "spk2-c"]
    lengths = {u: sf.info(p).frames for u, p in wav_scp.items()}
    assert lengths == {"spk1-a": 8000, "spk1-b": 12000, "spk2-c": 12000}
    assert all(Path(p).parent == dst.absolute() / "audio" for p in wav_scp.values())
    validate_data_dir(dst)


def test_piped_audio_is_extracted(tmp_path):
    wav = _long_recording(tmp_path / "a.wav", seconds=0.5)
    src = _write_dir(tmp_path / "piped", {
        "wav.scp": [f"s-1 cat {wav} |"], "text": ["s-1 HI"], "utt2spk": ["s-1 s"], "spk2utt": ["s s-1"],
    })
    with pytest.raises(DataDirError, match="piped command"):
        import_data_dir(src, tmp_path / "data" / "x")
    import_data_dir(src, tmp_path / "data" / "x", extract_audio=True)
    flac = read_kaldi_map(tmp_path / "data" / "x" / "wav.scp")["s-1"]
    assert flac.endswith("s-1.flac") and sf.info(flac).frames == 8000


def test_wrong_sample_rate_names_the_source_line(tmp_path):
    src = make_tone_data_dir(tmp_path / "corpus", "train", n_utts=3)
    first = read_kaldi_map(src / "wav.scp")
    utt, path = sorted(first.items())[1]
    sf.write(path, np.zeros(8000, dtype=np.float32), 8000)
    expected = rf"{src}/wav.scp line 2: recording '{utt}': sample rate 8000 Hz, expected 16000"
    with pytest.raises(DataDirError, match=expected):
        import_data_dir(src, tmp_path / "data" / "train")
    assert not [p for p in (tmp_path / "data").iterdir()]  # nothing left behind


def test_all_sources_are_checked_before_any_is_imported(tmp_path):
    good = make_tone_data_dir(tmp_path / "c", "train", n_utts=2)
    with pytest.raises(DataDirError, match=r"missing \(for data/dev\): not a folder"):
        import_data_dirs({"train": good, "dev": tmp_path / "missing"}, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_cli_reports_bad_names(tmp_path, capsys):
    good = make_tone_data_dir(tmp_path / "c", "train", n_utts=2)
    assert import_cli.main(["--dir", f"../up={good}", "--data_dir", str(tmp_path / "d")]) == 1
    assert "data dir name '../up' is not allowed" in capsys.readouterr().err
    assert import_cli.main(["--dir", f"train={good}", "--data_dir", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'd' / 'train'}: 2 utts, 2 speakers")


def test_own_corpus_data_sh_refuses_a_test_dir_named_train(tmp_path):
    work = tmp_path / "recipe"
    work.mkdir()
    script = REPO / "egs2" / "own_corpus" / "asr1" / "local" / "data.sh"
    proc = subprocess.run([str(script), "--test_dirs", "/x/train"], cwd=work, capture_output=True, text=True)
    assert proc.returncode != 0 and "--test_dirs other_name=/x/train" in proc.stderr
    proc = subprocess.run([str(script)], cwd=work, capture_output=True, text=True)
    assert proc.returncode != 0 and "data/train does not exist: pass --train_dir DIR" in proc.stderr


def test_own_corpus_data_sh_imports_named_test_dirs(tmp_path):
    corpus = tmp_path / "corpus"
    dirs = {name: make_tone_data_dir(corpus, name, n_utts=2, seed=i) for i, name in enumerate(("tr", "dv", "ts"))}
    work = tmp_path / "recipe"
    work.mkdir()
    script = REPO / "egs2" / "own_corpus" / "asr1" / "local" / "data.sh"
    proc = subprocess.run([str(script), "--train_dir", str(dirs["tr"]), "--valid_dir", str(dirs["dv"]),
                           "--test_dirs", f"{dirs['ts']},heldout={dirs['ts']}"],
                          cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (work / "data").iterdir()) == ["dev", "heldout", "train", "ts"]
    assert read_kaldi_map(work / "data" / "heldout" / "text") == read_kaldi_map(dirs["ts"] / "text")
