"""Federated partitions: speakers as clients, seeded sampling, withheld-domain splits."""

import pytest

from espnet_ext.data.kaldi import KaldiDataDir
from espnet_ext.federated.partition import (
    ClientSampler,
    PartitionError,
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
