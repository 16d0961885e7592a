"""The synthetic default corpus: reproducible, well-formed, resumable (espnet_ext.corpora.synth_corpus).

Corpora here are tiny (3 speakers: flite, espeak-ng and festival voices; a few utterances each).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

from espnet_ext.bin import make_synth_corpus as make_cli
from espnet_ext.data.kaldi import KaldiDataDir, read_kaldi_map
from espnet_ext.corpora.sentences import (
    SentenceSourceError,
    load_wordnet_sentences,
    normalize_transcript,
)
from espnet_ext.corpora.synth_corpus import (
    COMPLETE_MARKER,
    CorpusOptionsError,
    SynthCorpusOptions,
    build_synth_corpus,
    split_sentences,
)
from espnet_ext.data.validate import validate_data_dir
from espnet_ext.corpora.voices import BASE_VOICES, make_speakers

REPO = Path(__file__).resolve().parents[2]
TINY = dict(num_speakers=3, train_per_speaker=4, dev_per_speaker=2, test_per_speaker=2, nj=2, progress=False)
AUGMENTED = dict(TINY, noise_snr_db=(5.0, 20.0), reverb=True)


def _files(root: Path) -> dict:
    """{relative path: sha1} of every file under root (wav.scp paths made relative)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "wav.scp":
                data = data.replace(str(root).encode(), b"<root>")
            out[str(p.relative_to(root))] = hashlib.sha1(data).hexdigest()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny corpus with noisy and reverberant utterances; (root, summary)."""
    root = tmp_path_factory.mktemp("corpus_a")
    summary = build_synth_corpus(root, data_dir=root / "data", seed=7, **AUGMENTED)
    return root, summary


def test_same_seed_gives_byte_identical_corpus(corpus, tmp_path):
    root, _ = corpus
    build_synth_corpus(tmp_path, data_dir=tmp_path / "data", seed=7, **AUGMENTED)
    a, b = _files(root), _files(tmp_path)
    assert a.keys() == b.keys()
    assert sum(k.endswith(".flac") for k in a) == 3 * (4 + 2 + 2)
    assert a == b


def test_different_seed_gives_different_corpus(corpus, tmp_path):
    root, _ = corpus
    build_synth_corpus(tmp_path, data_dir=tmp_path / "data", seed=8, **AUGMENTED)
    a, b = _files(root), _files(tmp_path)
    assert (root / "data/train/text").read_text() != (tmp_path / "data/train/text").read_text()
    flac = [k for k in a if k.endswith(".flac")]
    assert all(a[k] != b[k] for k in flac)


def test_splits_counts_and_sentence_disjointness(corpus):
    root, summary = corpus
    assert summary.num_utterances == {"train": 12, "dev": 6, "test": 6}
    assert summary.rendered == 24 and summary.num_speakers == 3
    texts = {s: read_kaldi_map(root / "data" / s / "text") for s in ("train", "dev", "test")}
    train = set(texts["train"].values())
    held_out = set(texts["dev"].values()) | set(texts["test"].values())
    assert len(held_out) == 12 and not train & held_out
    for split, per in (("train", 4), ("dev", 2), ("test", 2)):
        spk2utt = KaldiDataDir.read(root / "data" / split).spk2utt
        assert {s: len(u) for s, u in spk2utt.items()} == {"1001": per, "1002": per, "1003": per}


def test_split_sentences_never_leaks_dev_test_into_train():
    pool = [f"SENTENCE {i}" for i in range(60)]
    opts = SynthCorpusOptions(num_speakers=5, train_per_speaker=20, dev_per_speaker=2, test_per_speaker=2)
    parts = split_sentences(pool, opts)  # 20 dev/test + 100 train from 40 left: train reuses
    train = {s for spk in parts["train"] for s in spk}
    held_out = {s for split in ("dev", "test") for spk in parts[split] for s in spk}
    assert len(held_out) == 20 and not train & held_out
    assert all(len(set(spk)) == 20 for spk in parts["train"])
    with pytest.raises(ValueError, match="only 60 sentences available"):
        split_sentences(pool, SynthCorpusOptions(num_speakers=5, train_per_speaker=50))


def test_audio_and_kaldi_formats(corpus):
    root, summary = corpus
    for split in ("train", "dev", "test"):
        d = root / "data" / split
        result = validate_data_dir(d)  # sorted, consistent, 16 kHz mono, readable
        assert result.num_speakers == 3
        durations = read_kaldi_map(d / "utt2dur")
        for utt, path in read_kaldi_map(d / "wav.scp").items():
            info = sf.info(path)
            assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1)
            assert float(durations[utt]) == pytest.approx(info.duration, abs=1e-3)
            assert 0.5 < info.duration < 15
        assert result.total_seconds == pytest.approx(summary.seconds[split], abs=0.01)
        assert read_kaldi_map(d / "spk2gender") == {"1001": "f", "1002": "m", "1003": "m"}
        voices = read_kaldi_map(d / "utt2voice")
        assert {voices[u] for u in voices if u.startswith("1003-")} == {"festival:kal_diphone"}
        assert set(read_kaldi_map(d / "utt2condition").values()) <= {"clean", "noisy", "reverb"}
    conditions = [c for s in ("train", "dev", "test")
                  for c in read_kaldi_map(root / "data" / s / "utt2condition").values()]
    assert set(conditions) == {"clean", "noisy", "reverb"}  # seed 7 draws all three


def test_librispeech_layout(corpus):
    root, _ = corpus
    tree = root / "LibriSpeech-like"
    flacs = sorted(tree.rglob("*.flac"))
    assert len(flacs) == 24
    for f in flacs:
        split, spk, chapter, name = f.relative_to(tree).parts
        assert split in ("train", "dev", "test")
        assert re.fullmatch(rf"{spk}-{chapter}-\d{{4}}\.flac", name)
    text = read_kaldi_map(root / "data/dev/text")
    trans = read_kaldi_map(tree / "dev/1002/200/1002-200.trans.txt")
    assert trans == {u: t for u, t in text.items() if u.startswith("1002-200-")} and len(trans) == 2
    lines = [l for l in (tree / "SPEAKERS.TXT").read_text().splitlines() if not l.startswith(";")]
    rows = [[c.strip() for c in l.split("|")] for l in lines]
    assert len(rows) == 9  # 3 speakers x 3 subsets
    assert ["1001", "F", "train"] == rows[0][:3] and float(rows[0][3]) > 0
    assert rows[0][4].startswith("flite:slt ")


def test_speakers_are_distinct():
    speakers = make_speakers(40, seed=1)
    assert len({s.speaker_id for s in speakers}) == 40
    configs = {(s.base.key, s.pitch_factor, s.rate_factor, s.vtl_factor, s.eq) for s in speakers}
    assert len(configs) == 40
    default = make_speakers(12, seed=1)
    assert len({s.base.key for s in default}) == 12  # 12 different base voices
    assert {s.base.engine for s in default} == {"espeak-ng", "flite", "festival"}
    assert {s.gender for s in default} == {"f", "m"}
    # Same seed, same speakers; another seed changes the knobs, not the base voices.
    assert make_speakers(12, seed=1) == default
    other = make_speakers(12, seed=2)
    assert [s.base for s in other] == [s.base for s in default] and other != default
    # Past the catalogue, base voices repeat with a clearly different vocal-tract length.
    n = len(BASE_VOICES)
    for first, repeat in zip(speakers, speakers[n:]):
        assert first.base == repeat.base
        assert abs(first.vtl_factor - repeat.vtl_factor) > 0.02


def test_speaker_metadata_written(corpus):
    root, _ = corpus
    meta = json.loads((root / "LibriSpeech-like/speakers.json").read_text())
    assert [m["speaker_id"] for m in meta] == ["1001", "1002", "1003"]
    assert len({json.dumps({k: v for k, v in m.items() if k != "speaker_id"}) for m in meta}) == 3
    record = json.loads((root / "synth_corpus.json").read_text())
    assert record["options"]["seed"] == 7 and record["options"]["noise_snr_db"] == [5.0, 20.0]
    spk2voice = read_kaldi_map(root / "data/train/spk2voice")
    assert spk2voice["1001"].startswith("flite:slt p") and f"eq={meta[0]['eq']}" in spk2voice["1001"]


def test_rerun_is_noop_and_resume_rerenders_only_missing(tmp_path):
    summary = build_synth_corpus(tmp_path, seed=3, **TINY)
    assert summary.rendered == 24
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = build_synth_corpus(tmp_path, seed=3, **TINY)
    assert again.rendered == 0 and again.num_utterances == summary.num_utterances
    assert again.seconds == pytest.approx(summary.seconds)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before

    # A deleted file is rendered again, identical to before.
    victim = tmp_path / "LibriSpeech-like/test/1003/300/1003-300-0001.flac"
    original = victim.read_bytes()
    victim.unlink()
    assert build_synth_corpus(tmp_path, seed=3, **TINY).rendered == 1
    assert victim.read_bytes() == original

    # An interrupted build (no completion marker, some audio missing) resumes.
    (tmp_path / COMPLETE_MARKER).unlink()
    for f in sorted((tmp_path / "LibriSpeech-like/train/1001").rglob("*.flac"))[:3]:
        f.unlink()
    assert build_synth_corpus(tmp_path, seed=3, **TINY).rendered == 3
    assert (tmp_path / COMPLETE_MARKER).is_file()
    validate_data_dir(tmp_path / "data/train")


def test_other_options_into_same_dir_is_an_error(tmp_path):
    build_synth_corpus(tmp_path / "c", data_dir=tmp_path / "data", seed=3, **TINY)
    before = _files(tmp_path)
    with pytest.raises(CorpusOptionsError, match=r"other options \(seed=3 there, 4 now\)"):
        build_synth_corpus(tmp_path / "c", data_dir=tmp_path / "data", seed=4, **TINY)
    with pytest.raises(CorpusOptionsError, match=r"data[/\\]train holds the Kaldi files of a synthetic corpus"):
        build_synth_corpus(tmp_path / "c2", data_dir=tmp_path / "data", seed=4, **TINY)
    assert _files(tmp_path) == before
    foreign = tmp_path / "foreign" / "train"
    foreign.mkdir(parents=True)
    (foreign / "text").write_text("x HELLO\n")
    with pytest.raises(CorpusOptionsError, match="not written by this corpus builder"):
        build_synth_corpus(tmp_path / "c3", data_dir=tmp_path / "foreign", seed=4, **TINY)


def test_missing_wordnet_says_how_to_install(tmp_path):
    with pytest.raises(SentenceSourceError, match=r"data.noun.*not found.*tools/install.sh.*wordnet-base"):
        build_synth_corpus(tmp_path / "c", wordnet_dir=tmp_path, **TINY)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("hushed-up stories sometimes leak out", "HUSHED UP STORIES SOMETIMES LEAK OUT"),
        ("an unpredictable (or indeterminable) future", "AN UNPREDICTABLE OR INDETERMINABLE FUTURE"),
        ("calling it a `score' was typical", "CALLING IT A SCORE WAS TYPICAL"),
        ("Elizabeth's accession was celebrated", "ELIZABETH'S ACCESSION WAS CELEBRATED"),
        ("the café au lait was cold", "THE CAFE AU LAIT WAS COLD"),
        ("he had 3 outs per inning", None),  # digits
        ("Mr. Smith went home early", None),  # abbreviation
        ("the U.S. army marched", None),
        ("NATO forces were deployed", None),  # acronym
        ("pay 50% now", None),
        ("burned alive", None),  # too short
        (" ".join(["word"] * 16), None),  # too long
    ],
)
def test_normalize_transcript(raw, expected):
    assert normalize_transcript(raw) == expected


def test_wordnet_sentences_are_clean_unique_and_stable():
    sentences = load_wordnet_sentences()
    assert len(sentences) > 5000
    assert len(set(sentences)) == len(sentences)
    assert all(re.fullmatch(r"[A-Z']+( [A-Z']+){2,14}", s) for s in sentences)
    assert load_wordnet_sentences()[:100] == sentences[:100]


def test_cli_and_data_sh(tmp_path, capsys):
    args = ["--out_dir", str(tmp_path / "c"), "--num_speakers", "2", "--train_per_speaker", "2",
            "--dev_per_speaker", "1", "--test_per_speaker", "1", "--no_progress"]
    assert make_cli.main(args) == 0
    assert "2 speakers, utterances: train 4, dev 2, test 2" in capsys.readouterr().out
    assert make_cli.main(args + ["--seed", "9"]) == 1
    assert "other options (seed=1 there, 9 now)" in capsys.readouterr().err

    # The recipe's data stage, run from a recipe-like folder.
    data_sh = REPO / "egs2/synth_en/asr1/local/data.sh"
    proc = subprocess.run(
        ["bash", str(data_sh), "--num_speakers", "2", "--train_per_speaker", "2",
         "--dev_per_speaker", "1", "--test_per_speaker", "1", "--noise_snr_db", "10,20"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "data/train: 4 utts, 2 speakers" in proc.stdout
    assert (tmp_path / "downloads/synth_en/LibriSpeech-like/SPEAKERS.TXT").is_file()
    assert "noisy" in (tmp_path / "data/train/utt2condition").read_text() + (
        tmp_path / "data/dev/utt2condition").read_text() + (tmp_path / "data/test/utt2condition").read_text()
    bad = subprocess.run(["bash", str(data_sh), "--bogus", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown option '--bogus'" in bad.stdout + bad.stderr
