"""Kaldi data dir I/O: sorting, round trips, spk2utt, subsets (espnet_ext.data.kaldi)."""

from __future__ import annotations

import pytest

from espnet_ext.data.kaldi import (
    DataDirError,
    KaldiDataDir,
    Segment,
    Utterance,
    read_kaldi_map,
    spk2utt_from_utt2spk,
    subset_data_dir,
    write_data_dir,
    write_kaldi_map,
)
from espnet_ext.data.validate import validate_data_dir


def _utts():
    # Two speakers, one of them with ids that sort differently in C order than in a "natural" one.
    return [
        Utterance("spkB-2", "/x/b2.flac", "HELLO THERE", "spkB", {"dur": "1.5", "condition": "clean"}),
        Utterance("spkA-10", "/x/a10.flac", "GOOD MORNING", "spkA", {"dur": "2.0", "condition": "noisy"}),
        Utterance("spkA-9", "/x/a9.flac", "HI", "spkA", {"dur": "0.5", "condition": "clean"}),
        Utterance("spkB-1", "/x/b1.flac", "YES", "spkB", {"dur": "1.0", "condition": "reverb"}),
    ]


def test_write_kaldi_map_sorts_in_c_byte_order(tmp_path):
    path = tmp_path / "map"
    write_kaldi_map(path, {"a_1": "x", "a-1": "y", "B": "z", "a": "w", "a10": "v", "a9": "u"})
    keys = [line.split()[0] for line in path.read_text().splitlines()]
    # C locale: uppercase before lowercase, '-' (0x2d) before digits before '_' (0x5f).
    assert keys == ["B", "a", "a-1", "a10", "a9", "a_1"]
    assert read_kaldi_map(path) == {"B": "z", "a": "w", "a-1": "y", "a10": "v", "a9": "u", "a_1": "x"}
    assert not [p for p in tmp_path.iterdir() if p.name != "map"]  # no temporary files left


def test_write_kaldi_map_rejects_keys_with_whitespace(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        write_kaldi_map(tmp_path / "m", {"a b": "x"})


def test_read_kaldi_map_keeps_spaces_in_values_and_reports_duplicates(tmp_path):
    path = tmp_path / "text"
    path.write_text("u1 HELLO  BIG WORLD\nu2 A\nu1 AGAIN\n")
    with pytest.raises(DataDirError, match=r"text line 3: duplicate key 'u1' \(first on line 1\)"):
        read_kaldi_map(path)
    path.write_text("u1 HELLO  BIG WORLD\nu2\n")
    with pytest.raises(DataDirError, match="text line 2: key 'u2' has no value"):
        read_kaldi_map(path)
    assert read_kaldi_map(path, allow_empty_value=True) == {"u1": "HELLO  BIG WORLD", "u2": ""}


def test_spk2utt_from_utt2spk():
    spk2utt = spk2utt_from_utt2spk({"b-2": "b", "a-1": "a", "b-1": "b"})
    assert spk2utt == {"a": ["a-1"], "b": ["b-1", "b-2"]}
    assert list(spk2utt) == ["a", "b"]


def test_write_data_dir_round_trip_and_valid(tmp_path):
    d = tmp_path / "train"
    write_data_dir(d, _utts(), spk_fields={"gender": {"spkA": "f", "spkB": "m"}})
    names = sorted(p.name for p in d.iterdir())
    assert names == ["spk2gender", "spk2utt", "text", "utt2condition", "utt2dur", "utt2spk", "wav.scp"]
    assert (d / "spk2utt").read_text() == "spkA spkA-10 spkA-9\nspkB spkB-1 spkB-2\n"
    assert (d / "utt2dur").read_text().splitlines()[0] == "spkA-10 2.0"
    data = KaldiDataDir.read(d)
    assert data.utterances == ["spkA-10", "spkA-9", "spkB-1", "spkB-2"]
    assert data.speakers == ["spkA", "spkB"]
    assert data.text["spkA-10"] == "GOOD MORNING"
    assert data.utt_fields["condition"]["spkB-1"] == "reverb"
    assert data.spk_fields["gender"] == {"spkA": "f", "spkB": "m"}
    summary = validate_data_dir(d, check_audio=False)
    assert (summary.num_utterances, summary.num_speakers) == (4, 2)
    assert summary.total_seconds == pytest.approx(5.0)  # from utt2dur


def test_write_data_dir_rejects_duplicates_and_uneven_fields(tmp_path):
    u = _utts()
    with pytest.raises(ValueError, match="duplicate utterance id 'spkB-2'"):
        write_data_dir(tmp_path / "a", u + [u[0]])
    odd = Utterance("spkC-1", "/x/c.flac", "NO", "spkC", {"dur": "1.0"})
    with pytest.raises(ValueError, match="'spkC-1' has fields"):
        write_data_dir(tmp_path / "b", u + [odd])


def test_subset_by_speaker_and_predicate(tmp_path):
    src = tmp_path / "all"
    write_data_dir(src, _utts(), spk_fields={"gender": {"spkA": "f", "spkB": "m"}})
    sub = subset_data_dir(src, tmp_path / "spkB", speakers=["spkB"])
    assert sub.utterances == ["spkB-1", "spkB-2"]
    assert (tmp_path / "spkB" / "spk2gender").read_text() == "spkB m\n"
    assert (tmp_path / "spkB" / "spk2utt").read_text() == "spkB spkB-1 spkB-2\n"
    validate_data_dir(tmp_path / "spkB", check_audio=False)

    data = KaldiDataDir.read(src)
    clean = data.subset(predicate=lambda u: data.utt_fields["condition"][u] == "clean")
    assert clean.utterances == ["spkA-9", "spkB-2"]
    assert set(clean.wav_scp) == {"spkA-9", "spkB-2"}
    with pytest.raises(ValueError, match="unknown speaker.*'spkZ'"):
        data.subset(speakers=["spkZ"])
    with pytest.raises(ValueError, match="is the source"):
        subset_data_dir(src, src, speakers=["spkA"])


def test_subset_never_replaces_a_dir_it_did_not_write(tmp_path):
    src = tmp_path / "all"
    write_data_dir(src, _utts())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "text").write_text("u1 MY OWN\n")
    (mine / "utt2notes").write_text("u1 checked\n")
    with pytest.raises(DataDirError, match=f"{mine} already exists and was not written by subset_data_dir"):
        subset_data_dir(src, mine, speakers=["spkA"])
    assert sorted(p.name for p in mine.iterdir()) == ["text", "utt2notes"]
    assert (mine / "text").read_text() == "u1 MY OWN\n" and (mine / "utt2notes").read_text() == "u1 checked\n"
    # Its own earlier output: the same subset is kept, another one needs overwrite.
    out = tmp_path / "spkA"
    subset_data_dir(src, out, speakers=["spkA"])
    mtime = (out / "text").stat().st_mtime_ns
    subset_data_dir(src, out, speakers=["spkA"])
    assert (out / "text").stat().st_mtime_ns == mtime
    with pytest.raises(DataDirError, match="written by subset_data_dir earlier"):
        subset_data_dir(src, out, speakers=["spkB"])
    subset_data_dir(src, out, speakers=["spkB"], overwrite=True)
    assert set(read_kaldi_map(out / "utt2spk").values()) == {"spkB"}


def test_segments_round_trip_and_subset_keeps_needed_recordings(tmp_path):
    data = KaldiDataDir(
        wav_scp={"rec1": "/x/rec1.flac", "rec2": "/x/rec2.flac"},
        text={"s1-a": "ONE", "s1-b": "TWO", "s2-a": "THREE"},
        utt2spk={"s1-a": "s1", "s1-b": "s1", "s2-a": "s2"},
        segments={"s1-a": Segment("rec1", 0.0, 1.5), "s1-b": Segment("rec1", 1.5, 3.0),
                  "s2-a": Segment("rec2", 0.25, 2.0)},
    )
    data.write(tmp_path / "d")
    assert (tmp_path / "d" / "segments").read_text().splitlines()[2] == "s2-a rec2 0.250 2.000"
    back = KaldiDataDir.read(tmp_path / "d")
    assert back.segments["s1-b"] == Segment("rec1", 1.5, 3.0)
    assert back.recording_of("s2-a") == "rec2"
    summary = validate_data_dir(tmp_path / "d", check_audio=False)
    assert (summary.num_utterances, summary.num_recordings) == (3, 2)
    assert summary.total_seconds == pytest.approx(4.75)
    assert set(back.subset(speakers=["s2"]).wav_scp) == {"rec2"}
