"""LibriSpeech preparation (espnet_ext.corpora.librispeech) on a tiny fake LibriSpeech tree."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

from espnet_ext.bin import prep_librispeech as prep_cli
from espnet_ext.data.combine import combine_data_dirs
from espnet_ext.data.kaldi import DataDirError, KaldiDataDir, read_kaldi_map
from espnet_ext.corpora.librispeech import (
    LibriSpeechError,
    prepare_librispeech,
    read_speakers_txt,
)
from espnet_ext.data.validate import validate_data_dir

from helpers import TINY_PARTS, make_fake_librispeech, run_local_data

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_tree(tmp_path) -> Path:
    return make_fake_librispeech(tmp_path / "corpora")


def test_prepares_sorted_validated_dirs_and_combined_dev(fake_tree, tmp_path):
    data = tmp_path / "data"
    summaries = prepare_librispeech(
        fake_tree.parent, data, combine={"dev": ["dev_clean", "dev_other"]}, check_audio=True)
    assert [Path(s.path).name for s in summaries] == [
        "train_clean_100", "dev_clean", "dev_other", "test_clean", "test_other", "dev"]
    for s in summaries[:5]:
        assert (s.num_utterances, s.num_speakers) == (8, 2)
    assert (summaries[-1].num_utterances, summaries[-1].num_speakers) == (16, 4)

    train = data / "train_clean_100"
    assert sorted(p.name for p in train.iterdir() if not p.name.startswith(".")) == [
        "spk2gender", "spk2utt", "text", "utt2chapter", "utt2dur", "utt2spk", "wav.scp"]
    wav_scp = read_kaldi_map(train / "wav.scp")
    utt = next(iter(wav_scp))
    reader, chapter, _ = utt.split("-")
    # Plain absolute FLAC paths (no pipes), keyed by LibriSpeech's utterance id.
    assert wav_scp[utt] == str(fake_tree / "train-clean-100" / reader / chapter / f"{utt}.flac")
    assert read_kaldi_map(train / "utt2spk")[utt] == reader
    assert read_kaldi_map(train / "utt2chapter")[utt] == chapter
    trans = fake_tree / "train-clean-100" / reader / chapter / f"{reader}-{chapter}.trans.txt"
    assert read_kaldi_map(train / "text")[utt] == read_kaldi_map(trans)[utt]
    assert float(read_kaldi_map(train / "utt2dur")[utt]) == pytest.approx(sf.info(wav_scp[utt]).duration, abs=1e-4)
    assert read_kaldi_map(train / "spk2gender") == {"107": "m", "114": "f"}
    dev = KaldiDataDir.read(data / "dev")
    assert set(dev.utt2spk) == set(read_kaldi_map(data / "dev_clean" / "text")) | set(
        read_kaldi_map(data / "dev_other" / "text"))
    assert set(dev.utt_fields) == {"chapter", "dur"} and set(dev.spk_fields) == {"gender"}


def test_speaker_unit_chapter_gives_kaldi_speakers(fake_tree, tmp_path):
    prepare_librispeech(fake_tree, tmp_path / "data", parts=["dev-clean"], speaker_unit="chapter")
    d = KaldiDataDir.read(tmp_path / "data" / "dev_clean")
    assert all(u.startswith(s + "-") and s.count("-") == 1 for u, s in d.utt2spk.items())
    assert len(d.speakers) == 4 and set(d.spk_fields["gender"].values()) == {"f", "m"}


def test_rerun_keeps_prepared_dir_and_new_options_need_overwrite(fake_tree, tmp_path):
    data = tmp_path / "data"
    prepare_librispeech(fake_tree, data, parts=["test-clean"])
    text = data / "test_clean" / "text"
    mtime = text.stat().st_mtime_ns
    prepare_librispeech(fake_tree, data, parts=["test-clean"])
    assert text.stat().st_mtime_ns == mtime
    with pytest.raises(DataDirError, match="test_clean was written by prep_librispeech earlier with "
                                           "other options.*pass --overwrite to replace it"):
        prepare_librispeech(fake_tree, data, parts=["test-clean"], read_durations=False)
    assert (data / "test_clean" / "utt2dur").exists() and text.stat().st_mtime_ns == mtime
    prepare_librispeech(fake_tree, data, parts=["test-clean"], read_durations=False, overwrite=True)
    assert not (data / "test_clean" / "utt2dur").exists()
    assert not [p.name for p in data.iterdir() if p.name.startswith(".")]  # no temporary dirs left


def test_speakers_txt_names_with_bars(fake_tree):
    readers = read_speakers_txt(fake_tree / "SPEAKERS.TXT")
    assert readers["107"].name == "|CBW|Simon" and readers["107"].gender == "m"
    assert readers["107"].subset == "train-clean-100" and readers["107"].minutes == 1.0


def test_missing_root_says_where_to_put_the_corpus(tmp_path):
    with pytest.raises(LibriSpeechError) as e:
        prepare_librispeech(tmp_path / "nowhere", tmp_path / "data")
    msg = str(e.value)
    assert "openslr.org/12" in msg and "nowhere/LibriSpeech/train-clean-100" in msg
    assert "--librispeech_dir" in msg


def test_missing_part_names_the_archive_to_extract(tmp_path):
    corpus = make_fake_librispeech(tmp_path / "c", parts=["dev-clean"], utts_per_reader={"dev-clean": 2})
    with pytest.raises(LibriSpeechError) as e:
        prepare_librispeech(corpus.parent, tmp_path / "data")
    msg = str(e.value)
    assert "part train-clean-100 not found" in msg and "parts present: dev-clean" in msg
    assert "train-clean-100.tar.gz" in msg and f"-C {corpus.parent}" in msg
    assert not (tmp_path / "data").exists()  # nothing written before the check


def _first_chapter(corpus: Path, part: str) -> Path:
    return sorted((corpus / part).glob("*/*"))[0]


def test_flac_without_transcript_line(fake_tree, tmp_path):
    chapter = _first_chapter(fake_tree, "dev-clean")
    trans = next(chapter.glob("*.trans.txt"))
    lines = trans.read_text().splitlines()
    trans.write_text("\n".join(lines[1:]) + "\n")
    orphan = lines[0].split()[0]
    expected = rf"{orphan}\.flac: no transcript line '{orphan} \.\.\.' in .*trans\.txt"
    with pytest.raises(LibriSpeechError, match=expected):
        prepare_librispeech(fake_tree, tmp_path / "data", parts=["dev-clean"])
    assert not (tmp_path / "data" / "dev_clean").exists()


def test_transcript_line_without_flac(fake_tree, tmp_path):
    chapter = _first_chapter(fake_tree, "dev-clean")
    flac = sorted(chapter.glob("*.flac"))[-1]
    flac.unlink()
    with pytest.raises(LibriSpeechError, match=rf"trans\.txt line \d+: utterance '{flac.stem}' has no audio file"):
        prepare_librispeech(fake_tree, tmp_path / "data", parts=["dev-clean"])


def test_missing_transcript_file(fake_tree, tmp_path):
    chapter = _first_chapter(fake_tree, "test-other")
    next(chapter.glob("*.trans.txt")).unlink()
    expected = r"transcript file missing for the \d+ FLAC file\(s\).*extract test-other\.tar\.gz again"
    with pytest.raises(LibriSpeechError, match=expected):
        prepare_librispeech(fake_tree, tmp_path / "data", parts=["test-other"])


def test_reader_missing_from_speakers_txt(fake_tree, tmp_path):
    speakers = fake_tree / "SPEAKERS.TXT"
    speakers.write_text("".join(l + "\n" for l in speakers.read_text().splitlines() if not l.startswith("107 ")))
    with pytest.raises(LibriSpeechError, match="reader '107' has no line in SPEAKERS.TXT"):
        prepare_librispeech(fake_tree, tmp_path / "data", parts=["train-clean-100"])


def test_combine_rejects_duplicate_utterances(fake_tree, tmp_path):
    data = tmp_path / "data"
    prepare_librispeech(fake_tree, data, parts=["dev-clean"])
    with pytest.raises(DataDirError, match="utterance '.*' is in both"):
        combine_data_dirs([data / "dev_clean", data / "dev_clean"], data / "twice")


def test_cli_prints_summaries_and_reports_errors(fake_tree, tmp_path, capsys):
    rc = prep_cli.main(["--librispeech_dir", str(fake_tree.parent), "--data_dir", str(tmp_path / "d"),
                        "--parts", "dev-clean,dev-other", "--combine", "dev=dev_clean,dev_other"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(out) == 3 and out[-1].startswith(f"{tmp_path / 'd' / 'dev'}: 16 utts, 4 speakers")
    rc = prep_cli.main(["--librispeech_dir", str(tmp_path / "none"), "--data_dir", str(tmp_path / "d")])
    assert rc == 1 and "LibriSpeech not found" in capsys.readouterr().err


def test_recipe_data_sh_never_downloads_unless_asked(fake_tree, tmp_path):
    recipe = REPO / "egs2" / "librispeech_100" / "asr1"
    proc = run_local_data(recipe, tmp_path, "--librispeech_dir", str(tmp_path / "empty"))
    assert proc.returncode != 0
    assert "LibriSpeech not found" in proc.stderr + proc.stdout and "--download true" in proc.stderr + proc.stdout
    assert not (tmp_path / "download_attempts").exists()

    proc = run_local_data(recipe, tmp_path, "--librispeech_dir", str(fake_tree.parent))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("train_clean_100", "dev", "dev_clean", "dev_other", "test_clean", "test_other"):
        validate_data_dir(tmp_path / "recipe" / "data" / name)
    assert not (tmp_path / "download_attempts").exists()


def test_recipe_data_sh_downloads_missing_parts_when_asked(tmp_path):
    import tarfile

    # The archives of the fake corpus, as openslr serves them: LibriSpeech/<part>/... + top-level files.
    corpus = make_fake_librispeech(tmp_path / "src", utts_per_reader={p: 2 for p in TINY_PARTS})
    served = tmp_path / "served"
    served.mkdir()
    for part in TINY_PARTS:
        with tarfile.open(served / f"{part}.tar.gz", "w:gz") as tar:
            tar.add(corpus / part, arcname=f"LibriSpeech/{part}")
            tar.add(corpus / "SPEAKERS.TXT", arcname="LibriSpeech/SPEAKERS.TXT")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    # wget stub: `wget ... -O <file> <url>` copies the served archive named by the URL.
    (stubs / "wget").write_text(
        "#!/bin/bash\nout=; while [ $# -gt 1 ]; do [ \"$1\" = -O ] && out=$2; shift; done\n"
        f"echo \"$1\" >> {tmp_path}/fetched\ncp {served}/$(basename \"$1\") \"$out\"\n")
    (stubs / "wget").chmod(0o755)
    work = tmp_path / "recipe"
    (work / "local").mkdir(parents=True)
    recipe = REPO / "egs2" / "librispeech_100" / "asr1"
    os.symlink(recipe / "local" / "data.sh", work / "local" / "data.sh")
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}")
    args = ["local/data.sh", "--librispeech_dir", str(tmp_path / "dl"), "--download", "true",
            "--data_url", "https://mirror.example/12"]
    proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fetched = (tmp_path / "fetched").read_text().split()
    assert fetched == [f"https://mirror.example/12/{p}.tar.gz" for p in TINY_PARTS]
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["LibriSpeech"]  # archives removed
    assert (tmp_path / "dl" / "LibriSpeech" / "SPEAKERS.TXT").is_file()
    assert len(read_kaldi_map(work / "data" / "dev" / "text")) == 8
    # Parts already there are not fetched again.
    proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and len((tmp_path / "fetched").read_text().split()) == len(TINY_PARTS)


def test_recipe_configs_build_with_the_documented_sizes(tmp_path):
    """Every training config of librispeech_100 and own_corpus builds with ESPnet (on the meta
    device: no memory) with the encoder its name and README promise."""
    import torch
    import yaml
    from espnet2.tasks.asr import ASRTask

    from espnet_ext.asr.registration import register_encoders

    register_encoders()

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>"] + [f"t{i}" for i in range(4997)] + ["<sos/eos>"]) + "\n")
    sizes = {"s": (16, 144, 4, 8.7), "m": (16, 256, 4, 27.3), "l": (17, 512, 8, 114.9),
             "espnet_baseline": (12, 256, 4, 20.9), "e_branchformer_espnet_baseline": (12, 256, 4, 25.1)}
    configs = sorted((REPO / "egs2" / "librispeech_100" / "asr1" / "conf" / "tuning").glob("train_*.yaml"))
    configs += sorted((REPO / "egs2" / "own_corpus" / "asr1" / "conf").glob("train_*.yaml"))
    assert len(configs) == 10
    for config in configs:
        stem = config.stem.replace("train_asr_conformer_", "")
        size, _, norm = stem.rpartition("_") if stem != "espnet_baseline" else (stem, "", "bn")
        if stem == "train_asr_e_branchformer_espnet_baseline":
            size, norm = "e_branchformer_espnet_baseline", "e_branchformer"
        if config.parent.name == "conf":  # own_corpus: Conformer S
            size, norm = "s", stem
        blocks, dim, heads, encoder_millions = sizes[size]
        conf = yaml.safe_load(config.read_text())
        args = ASRTask.get_parser().parse_args(
            ["--config", str(config), "--token_type", "bpe", "--token_list", str(tokens)])
        with torch.device("meta"):
            model = ASRTask.build_model(args)
        enc = model.encoder
        assert (len(enc.encoders), enc.output_size()) == (blocks, dim), config
        attn = getattr(enc.encoders[0], "self_attn", None) or enc.encoders[0].attn
        assert attn.h == heads, config
        assert sum(p.numel() for p in enc.parameters()) / 1e6 == pytest.approx(encoder_millions, abs=0.05), config
        assert conf["encoder"] == {"gn": "norm_conformer", "e_branchformer": "e_branchformer"}.get(
            norm, "conformer"), config
        if norm == "gn":
            assert conf["encoder_conf"]["conv_norm_type"] == "group_norm", config
