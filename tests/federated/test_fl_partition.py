"""Federated partitions: speakers as clients, seeded sampling, withheld-domain splits."""

import pytest

from espnet_ext.data.kaldi import KaldiDataDir
from espnet_ext.federated.partition import (
    ClientSampler,
    PartitionError,
    every_nth_speaker,
    last_chapters,
    speaker_clients,
    split_withheld_domain,
)


def _data(n_spk=5, per_spk=(3, 1, 4, 2, 5)):
    wav, text, utt2spk, cond, dur = {}, {}, {}, {}, {}
    for s in range(n_spk):
        for i in range(per_spk[s]):
            u = f"s{s}-{i:02d}"
            wav[u], text[u], utt2spk[u] = f"/a/{u}.wav", "A B", f"s{s}"
            cond[u] = "noisy" if (s + i) % 3 == 0 else "clean"
            dur[u] = str(0.5 + i)
    return KaldiDataDir(wav, text, utt2spk, utt_fields={"condition": cond, "dur": dur})


def test_clients_are_speakers_with_enough_utterances():
    clients = speaker_clients(_data(), min_utts=3)
    assert [(c.index, c.speaker, c.num_examples) for c in clients] == [
        (0, "s0", 3), (1, "s2", 4), (2, "s4", 5)]
    assert clients[0].utterances == ("s0-00", "s0-01", "s0-02")
    with pytest.raises(PartitionError, match="no speaker has >= 9 utterances"):
        speaker_clients(_data(), min_utts=9)


def test_sampling_is_seeded_per_round_and_validated():
    a, b = ClientSampler(20, 4, seed=3), ClientSampler(20, 4, seed=3)
    rounds = [a.sample(r) for r in range(1, 6)]
    assert rounds == [b.sample(r) for r in range(1, 6)]
    assert all(len(set(s)) == 4 and s == sorted(s) and max(s) < 20 for s in rounds)
    assert len({tuple(s) for s in rounds}) > 1  # rounds differ
    assert a.sample(3) == rounds[2]  # any round can be redrawn alone (resume)
    assert ClientSampler(20, 4, seed=4).sample(1) != rounds[0] or ClientSampler(20, 4, seed=4).sample(2) != rounds[1]
    with pytest.raises(PartitionError, match="5 clients per round but only 3 clients"):
        ClientSampler(3, 5)


def test_withheld_domain_splits(tmp_path):
    d = _data()
    by_cond = split_withheld_domain(d, "field", field="condition", values=["noisy"])
    assert set(by_cond.withheld.utt_fields["condition"].values()) == {"noisy"}
    assert set(by_cond.central.utt_fields["condition"].values()) == {"clean"}
    assert len(by_cond.central.utt2spk) + len(by_cond.withheld.utt2spk) == len(d.utt2spk)

    short = split_withheld_domain(d, "duration", max_duration=1.0)
    assert set(short.withheld.utt2spk) == {u for u in d.utt2spk if u.endswith("-00")}
    assert short.rule == "duration < 1 s"

    spk = split_withheld_domain(d, "speakers", speakers=["s1", "s3"])
    assert set(spk.withheld.speakers) == {"s1", "s3"} and "s1" not in spk.central.speakers

    central_dir, withheld_dir = spk.write(tmp_path / "split")
    assert KaldiDataDir.read(withheld_dir).speakers == ["s1", "s3"]
    assert (tmp_path / "split" / "split_rule").read_text().startswith("speaker in")

    with pytest.raises(PartitionError, match="value 'reverb' does not occur"):
        split_withheld_domain(d, "field", values=["reverb"])
    with pytest.raises(PartitionError, match="no utt2gender file"):
        split_withheld_domain(d, "field", field="gender", values=["f"])
    with pytest.raises(PartitionError, match="nothing is left for central training"):
        split_withheld_domain(d, "duration", max_duration=100)
    with pytest.raises(PartitionError, match="speaker 'x' is not in utt2spk"):
        split_withheld_domain(d, "speakers", speakers=["x"])
    with pytest.raises(PartitionError, match="unknown split method"):
        split_withheld_domain(d, "random")


def _chapters(readers=("r1", "r2", "r3", "r4", "r5"), chapters=("c1", "c2"), per_chapter=2):
    """LibriSpeech-like ids <reader>-<chapter>-<n>; reader r1 has one chapter only."""
    wav, text, utt2spk, utt2chapter = {}, {}, {}, {}
    for r in readers:
        for c in chapters[:1] if r == "r1" else chapters:
            for i in range(per_chapter):
                u = f"{r}-{r}{c}-{i:04d}"
                wav[u], text[u], utt2spk[u], utt2chapter[u] = f"/a/{u}.flac", "A B", r, f"{r}{c}"
    return KaldiDataDir(wav, text, utt2spk, utt_fields={"chapter": utt2chapter})


def test_every_nth_speaker_withholds_speakers_n_2n_in_c_byte_order():
    d = _data(n_spk=5)
    assert every_nth_speaker(d, 2) == ["s1", "s3"]
    split = split_withheld_domain(d, "every_nth_speaker", every=2)
    assert split.withheld.speakers == ["s1", "s3"] and split.central.speakers == ["s0", "s2", "s4"]
    assert split.rule == "speakers 2, 4, ... in C byte order: speaker in {s1, s3}"
    # C byte order, not numeric: s10 sorts before s2.
    many = KaldiDataDir({f"s{i}-u": "/a.wav" for i in range(11)}, {f"s{i}-u": "A" for i in range(11)},
                        {f"s{i}-u": f"s{i}" for i in range(11)})
    assert every_nth_speaker(many, 3) == ["s10", "s4", "s7"]
    with pytest.raises(PartitionError, match="needs every >= 2"):
        every_nth_speaker(d, 1)
    with pytest.raises(PartitionError, match="needs every >= 2"):
        split_withheld_domain(d, "every_nth_speaker")
    with pytest.raises(PartitionError, match="has 5 speaker\\(s\\), fewer than every=6: lower every"):
        split_withheld_domain(d, "every_nth_speaker", every=6)


def test_last_chapter_split_holds_out_each_speakers_last_chapter():
    d = _chapters()
    assert last_chapters(d) == {"r1": "r1c1", "r2": "r2c2", "r3": "r3c2", "r4": "r4c2", "r5": "r5c2"}
    split = split_withheld_domain(d, "last_chapter")
    test_chapters = set(split.withheld.utt_fields["chapter"].values())
    assert test_chapters == {"r1c1", "r2c2", "r3c2", "r4c2", "r5c2"}
    # A reader with one chapter is test-only; the others keep their first chapter for training.
    assert split.central.speakers == ["r2", "r3", "r4", "r5"]
    assert set(split.central.utt_fields["chapter"].values()) == {"r2c1", "r3c1", "r4c1", "r5c1"}
    assert split.rule == "each speaker's last chapter: utt2chapter in {r1c1, r2c2, r3c2, r4c2, r5c2}"
    with pytest.raises(PartitionError, match="no utt2chapter file to split by"):
        split_withheld_domain(_data(), "last_chapter")
    with pytest.raises(PartitionError, match="nothing is left for central training"):
        split_withheld_domain(_chapters(chapters=("c1",)), "last_chapter")


def test_split_command_names_its_parts_and_replaces_an_earlier_split_only_with_overwrite(tmp_path, capsys):
    from espnet_ext.bin.fl_simulate import main

    src = tmp_path / "src"
    _chapters().write(src)
    out = tmp_path / "fl_adapt"
    args = ["split", "--data_dir", str(src), "--out_dir", str(out), "--method", "every_nth_speaker",
            "--central_name", "train", "--withheld_name", "test"]
    assert main(args + ["--every", "2"]) == 0
    assert KaldiDataDir.read(out / "test").speakers == ["r2", "r4"]
    assert sorted(p.name for p in out.iterdir()) == ["split_rule", "test", "train"]
    before = (out / "test" / "utt2spk").stat().st_mtime_ns
    assert main(args + ["--every", "2"]) == 0  # the same split again: kept as it is
    assert (out / "test" / "utt2spk").stat().st_mtime_ns == before
    capsys.readouterr()
    assert main(args + ["--every", "3"]) != 0  # another split: refused without --overwrite
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert KaldiDataDir.read(out / "test").speakers == ["r2", "r4"]
    assert main(args + ["--every", "3", "--overwrite"]) == 0
    assert KaldiDataDir.read(out / "test").speakers == ["r3"]
    assert (out / "split_rule").read_text() == "speakers 3, 6, ... in C byte order: speaker in {r3}\n"
    # A dir the tool did not write is never replaced, --overwrite or not.
    (tmp_path / "mine" / "train").mkdir(parents=True)
    (tmp_path / "mine" / "train" / "notes.txt").write_text("mine")
    mine_args = args[:4] + [str(tmp_path / "mine")] + args[5:]
    assert main(mine_args + ["--every", "2", "--overwrite"]) != 0
    assert "was not written by fl_simulate split" in capsys.readouterr().err
    assert (tmp_path / "mine" / "train" / "notes.txt").read_text() == "mine"
