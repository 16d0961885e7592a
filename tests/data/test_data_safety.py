"""The data layer never replaces or deletes what it did not write, cleans up after failures, writes
files others can read, and names the file for broken audio and byte-order marks."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import make_tone_data_dir
from helpers import make_fake_librispeech, run_local_data

from espnet_ext.bin import fl_simulate
from espnet_ext.bin import prep_librispeech as prep_cli
from espnet_ext.data.combine import combine_data_dirs
from espnet_ext.data.import_dirs import import_data_dir
from espnet_ext.data.kaldi import DataDirError, KaldiDataDir, read_kaldi_map
from espnet_ext.corpora.librispeech import prepare_librispeech
from espnet_ext.data.validate import validate_data_dir
from espnet_ext.federated.partition import split_withheld_domain
from espnet_ext.utils.atomic import write_text_atomic

REPO = Path(__file__).resolve().parents[2]


def _snapshot(root: Path) -> dict:
    """Every file under `root` (itself included): relative path -> (mtime, SHA-1 of the bytes)."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root.parent)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in files}


def _hidden(d: Path) -> list:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


@pytest.fixture
def corpus(tmp_path) -> Path:
    return make_fake_librispeech(tmp_path / "corpora", parts=("dev-clean", "dev-other", "test-clean"),
                                 utts_per_reader={p: 2 for p in ("dev-clean", "dev-other", "test-clean")})


def _own_dir(path: Path) -> Path:
    """A user's hand-made Kaldi dir with a notes file and extra metadata."""
    d = make_tone_data_dir(path.parent, path.name, n_utts=2, seed=3)
    (d / "NOTES.txt").write_text("my own test set, do not lose\n")
    (d / "utt2extra").write_text("".join(f"{u} x\n" for u in read_kaldi_map(d / "utt2spk")))
    return d


# --- prep_librispeech: existing dirs ----------------------------------------------------------


def test_prep_librispeech_refuses_a_users_dir_of_the_same_name(corpus, tmp_path, capsys):
    data = tmp_path / "data"
    mine = _own_dir(data / "test_clean")
    before = _snapshot(mine)
    for extra in ([], ["--overwrite"]):  # --overwrite never replaces a dir the tool did not write
        rc = prep_cli.main(["--librispeech_dir", str(corpus.parent), "--data_dir", str(data),
                            "--parts", "test-clean", *extra])
        err = capsys.readouterr().err
        assert rc == 1
        assert (f"prep_librispeech: error: {mine} already exists and was not written by prep_librispeech "
                f"(it has no .librispeech.json)") in err
        assert f"mv {mine} {mine}.orig" in err
        assert _snapshot(mine) == before
    assert _hidden(data) == []  # no temporary dir left


def test_prep_librispeech_combine_refuses_a_hand_made_dev(corpus, tmp_path, capsys):
    data = tmp_path / "data"
    dev = _own_dir(data / "dev")
    before = _snapshot(dev)
    rc = prep_cli.main(["--librispeech_dir", str(corpus.parent), "--data_dir", str(data),
                        "--parts", "dev-clean,dev-other", "--combine", "dev=dev_clean,dev_other"])
    assert rc == 1
    assert f"{dev} already exists and was not written by combine_data_dirs" in capsys.readouterr().err
    assert _snapshot(dev) == before and _hidden(data) == []


def test_prep_librispeech_rerun_is_a_noop_and_overwrite_replaces_only_its_own_files(corpus, tmp_path):
    data = tmp_path / "data"
    args = dict(parts=["dev-clean", "dev-other"], combine={"dev": ["dev_clean", "dev_other"]})
    prepare_librispeech(corpus, data, **args)
    notes = data / "dev_clean" / "NOTES.txt"
    notes.write_text("checked by hand\n")
    before = _snapshot(data)
    prepare_librispeech(corpus, data, **args)  # same options: nothing is touched
    assert _snapshot(data) == before
    with pytest.raises(DataDirError, match=r"dev_clean was written by prep_librispeech but now also holds "
                                           r"'NOTES.txt', which prep_librispeech did not write"):
        prepare_librispeech(corpus, data, read_durations=False, overwrite=True, **args)
    assert _snapshot(data) == before
    notes.unlink()
    prepare_librispeech(corpus, data, read_durations=False, overwrite=True, **args)
    assert not (data / "dev_clean" / "utt2dur").exists() and not (data / "dev" / "utt2dur").exists()
    assert _hidden(data) == []


def test_librispeech_data_sh_overwrite_option(tmp_path):
    corpus = make_fake_librispeech(tmp_path / "corpora", utts_per_reader={
        p: 2 for p in ("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other")})
    recipe = REPO / "egs2" / "librispeech_100" / "asr1"
    assert run_local_data(recipe, tmp_path, "--librispeech_dir", str(corpus.parent)).returncode == 0
    data = tmp_path / "recipe" / "data"
    before = _snapshot(data)
    proc = run_local_data(recipe, tmp_path, "--librispeech_dir", str(corpus.parent), "--speaker_unit", "chapter")
    assert proc.returncode == 1
    assert "train_clean_100 was written by prep_librispeech earlier with other options" in proc.stderr
    assert "pass --overwrite to replace it" in proc.stderr and _snapshot(data) == before
    proc = run_local_data(recipe, tmp_path, "--librispeech_dir", str(corpus.parent), "--speaker_unit", "chapter",
                       "--overwrite", "true")
    assert proc.returncode == 0, proc.stderr
    assert all(s.count("-") == 1 for s in read_kaldi_map(data / "dev" / "utt2spk").values())


# --- combine and split: existing targets ------------------------------------------------------


def test_combine_never_touches_a_users_dir_and_reruns_are_noops(tmp_path):
    a = make_tone_data_dir(tmp_path, "a", n_utts=2, seed=1)
    b = make_tone_data_dir(tmp_path, "b", n_utts=2, seed=2)
    mine = _own_dir(tmp_path / "data" / "mine")
    before = _snapshot(mine)
    with pytest.raises(DataDirError, match="mine already exists and was not written by combine_data_dirs"):
        combine_data_dirs([a, b], mine)
    assert _snapshot(mine) == before

    out = tmp_path / "data" / "ab"
    combine_data_dirs([a, b], out)
    first = _snapshot(out)
    combine_data_dirs([a, b], out)
    assert _snapshot(out) == first  # same combination: kept as it is
    with pytest.raises(DataDirError, match="ab was written by combine_data_dirs earlier with other "
                                           "options or other data; move it away .* delete it"):
        combine_data_dirs([a], out)
    combine_data_dirs([a], out, overwrite=True)
    assert read_kaldi_map(out / "text") == read_kaldi_map(a / "text")


def test_split_refuses_existing_targets_and_keeps_them_byte_identical(tmp_path, capsys):
    src = make_tone_data_dir(tmp_path, "train", n_utts=6)
    out = tmp_path / "fl"
    central = _own_dir(out / "central")
    (central / "spk2age").write_text("spk0 30\nspk1 40\n")
    before = _snapshot(out)
    rc = fl_simulate.main(["split", "--data_dir", str(src), "--out_dir", str(out), "--method", "speakers",
                           "--speakers", "spk1"])
    assert rc == 1
    assert f"{central} already exists and was not written by fl_simulate split" in capsys.readouterr().err
    assert _snapshot(out) == before and not (out / "withheld").exists()  # checked before any write

    # A split_rule file of the user's is not replaced either.
    out2 = tmp_path / "fl2"
    out2.mkdir()
    (out2 / "split_rule").write_text("mine\n")
    split = split_withheld_domain(src, "speakers", speakers=["spk1"])
    with pytest.raises(DataDirError, match="split_rule already exists and was not written by this split"):
        split.write(out2)
    assert (out2 / "split_rule").read_text() == "mine\n" and sorted(p.name for p in out2.iterdir()) == ["split_rule"]

    # Its own output: a re-run is a no-op; another split needs overwrite.
    out3 = tmp_path / "fl3"
    split.write(out3)
    first = _snapshot(out3)
    split.write(out3)
    assert _snapshot(out3) == first
    other = split_withheld_domain(src, "speakers", speakers=["spk0"])
    with pytest.raises(DataDirError, match="central was written by fl_simulate split earlier"):
        other.write(out3)
    assert _snapshot(out3) == first
    other.write(out3, overwrite=True)
    assert set(read_kaldi_map(out3 / "withheld" / "utt2spk").values()) == {"spk0"}
    assert (out3 / "split_rule").read_text() == "speaker in {spk0}\n"


def test_librispeech_fl_data_sh_never_removes_a_users_dirs(corpus, tmp_path):
    work = tmp_path / "recipe"
    prepare_librispeech(corpus, work / "data", parts=["dev-clean"])
    (work / "data" / "dev_clean").rename(work / "data" / "train_clean_100")
    script = REPO / "egs2" / "librispeech_100" / "asr1" / "local" / "fl_data.sh"
    mine = _own_dir(work / "data" / "fl_adapt" / "train")
    before = _snapshot(mine)
    proc = subprocess.run([str(script), "--every", "2"], cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "data/fl_adapt/train exists but was not written by" in proc.stderr
    assert _snapshot(mine) == before and not (work / "data" / "fl").exists()


# --- failed imports clean up ------------------------------------------------------------------


def test_failed_extract_import_removes_its_temporary_dir(tmp_path):
    good = tmp_path / "a.wav"
    sf.write(good, np.zeros(8000, dtype=np.float32), 16000, subtype="PCM_16")
    bad = tmp_path / "b.wav"
    bad.write_bytes(b"not audio at all")
    src = tmp_path / "src"
    src.mkdir()
    for name, text in (("wav.scp", f"s-a cat {good} |\ns-b cat {bad} |\n"), ("text", "s-a HI\ns-b HO\n"),
                       ("utt2spk", "s-a s\ns-b s\n"), ("spk2utt", "s s-a s-b\n")):
        (src / name).write_text(text)
    data = tmp_path / "data"
    with pytest.raises(DataDirError, match=r"recording 's-b': cannot read audio"):
        import_data_dir(src, data / "x", extract_audio=True)
    assert sorted(p.name for p in data.iterdir()) == []  # neither data/x nor data/.x.*.tmp


# --- audio: empty and truncated files ---------------------------------------------------------


def _one_utt_dir(tmp_path: Path, wav: Path, utt: str = "s1-u1") -> Path:
    d = tmp_path / "d"
    d.mkdir()
    for name, text in (("wav.scp", f"{utt} {wav}\n"), ("text", f"{utt} HI\n"), ("utt2spk", f"{utt} s1\n"),
                       ("spk2utt", f"s1 {utt}\n")):
        (d / name).write_text(text)
    return d


def test_wav_with_a_header_and_no_samples_is_an_error_naming_file_and_utterance(tmp_path):
    wav = tmp_path / "empty.wav"
    sf.write(wav, np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    d = _one_utt_dir(tmp_path, wav)
    expected = (rf"{d}/wav.scp line 1: recording 's1-u1': audio '{wav}' has no samples \(a header only\), "
                r"so utterance\(s\) 's1-u1' cannot be trained")
    with pytest.raises(DataDirError, match=expected):
        validate_data_dir(d)
    with pytest.raises(DataDirError, match="has no samples"):
        import_data_dir(d, tmp_path / "data" / "train")
    assert list((tmp_path / "data").iterdir()) == []


def test_truncated_wav_is_reported_with_its_file(tmp_path, caplog):
    wav = tmp_path / "cut.wav"
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000, subtype="PCM_16")
    whole = wav.read_bytes()
    wav.write_bytes(whole[: 44 + 16000])  # header + half of the 32000 bytes of samples
    d = _one_utt_dir(tmp_path, wav)
    with caplog.at_level(logging.WARNING, logger="espnet_ext.data.validate"):
        summary = validate_data_dir(d)
    assert summary.total_seconds == pytest.approx(0.5)  # what soundfile reads: half the samples
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{d}/wav.scp line 1: recording 's1-u1': {wav} is truncated: its header declares "
                        f"32000 bytes of samples but the file holds only 16000 (50.0%); training reads "
                        f"only what is there: copy or re-create the file"]
    caplog.clear()
    wav.write_bytes(whole)
    with caplog.at_level(logging.WARNING, logger="espnet_ext.data.validate"):
        validate_data_dir(d)
    assert not caplog.records


# --- byte-order marks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wav.scp", "text", "utt2spk", "spk2utt"])
def test_utf8_byte_order_mark_is_named_with_the_fix(tmp_path, name):
    d = make_tone_data_dir(tmp_path, "train", n_utts=2)
    f = d / name
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    expected = (f"{f} line 1: the file starts with a UTF-8 byte-order mark (bytes EF BB BF), which Kaldi "
                f"tools read as part of the first key; remove it with `sed -i '1s/^\\xEF\\xBB\\xBF//' {f}`")
    with pytest.raises(DataDirError) as e:
        validate_data_dir(d, check_audio=False)
    assert str(e.value) == expected
    if name != "spk2utt":  # derived from utt2spk when reading
        with pytest.raises(DataDirError, match="byte-order mark"):
            KaldiDataDir.read(d)
    # The suggested command fixes it.
    subprocess.run(["sed", "-i", r"1s/^\xEF\xBB\xBF//", str(f)], check=True)
    validate_data_dir(d, check_audio=False)


# --- setup.sh: paths with spaces --------------------------------------------------------------


@pytest.mark.parametrize("option, value", [
    ("--test_dirs", "{d}"), ("--test_dirs", "other={o} mine={d}"), ("--train_dir", "{d}")])
def test_setup_sh_refuses_dirs_with_spaces(tmp_path, option, value):
    d = make_tone_data_dir(tmp_path / "my corpora", "dev", n_utts=2)
    value = value.format(d=d, o=make_tone_data_dir(tmp_path / "corpora", "test", n_utts=2))
    proc = subprocess.run([str(REPO / "egs2" / "TEMPLATE" / "asr1" / "setup.sh"), option, value,
                           str(tmp_path / "new" / "asr1")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"{option} '{d}': paths with spaces are not supported" in proc.stderr
    assert not (tmp_path / "new").exists()


def test_setup_sh_refuses_missing_dirs(tmp_path):
    proc = subprocess.run([str(REPO / "egs2" / "TEMPLATE" / "asr1" / "setup.sh"), "--test_dirs",
                           str(tmp_path / "nope"), str(tmp_path / "new")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and f"--test_dirs '{tmp_path / 'nope'}' is not a directory" in proc.stderr


# --- file modes -------------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(root: Path) -> set:
    return {(p.is_dir(), stat.S_IMODE(p.stat().st_mode)) for p in [root, *root.rglob("*")]}


def test_data_files_get_the_umask_mode(tmp_path, corpus, umask_022):
    write_text_atomic(tmp_path / "a" / "f.txt", "x\n")
    assert stat.S_IMODE((tmp_path / "a" / "f.txt").stat().st_mode) == 0o644
    data = tmp_path / "data"
    prepare_librispeech(corpus, data, parts=["dev-clean", "dev-other"], combine={"dev": ["dev_clean", "dev_other"]})
    src = make_tone_data_dir(tmp_path / "c", "train", n_utts=2)
    import_data_dir(src, data / "train")
    import_data_dir(src, data / "train_flac", extract_audio=True)
    split_withheld_domain(data / "dev", "speakers", speakers=["121"]).write(data / "fl")
    assert _modes(data) == {(True, 0o755), (False, 0o644)}
    os.umask(0o002)  # derived from the umask, not fixed
    write_text_atomic(tmp_path / "g.txt", "x\n")
    assert stat.S_IMODE((tmp_path / "g.txt").stat().st_mode) == 0o664
