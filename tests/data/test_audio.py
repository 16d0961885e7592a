"""Reading a data dir's audio: how a wav.scp value gives it, samples, headers, utterances."""

from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from espnet_ext.data import audio
from espnet_ext.data.kaldi import DataDirError, KaldiDataDir, Segment
from helpers import tone_samples, write_tone


@pytest.fixture
def wav(tmp_path) -> Path:
    return write_tone(tmp_path / "a.wav", 0.5)


@pytest.mark.parametrize("value, kind", [
    ("/data/a.wav", "path"),
    ("a.flac", "path"),
    ("sox a.wav -t wav - |", "pipe"),
    ("cat a.wav|", "pipe"),
    ("cat a.wav |  ", "pipe"),
    ("/data/wavs.ark:12", "ark"),
    ("ark:/data/wavs.ark:0", "ark"),
    ("/data/wavs.ark", "path"),  # no byte offset: not a reference kaldiio can load
    ("ark:/data/wavs.ark", "path"),
])
def test_audio_kind(value, kind):
    assert audio.audio_kind(value) == kind
    assert kind in audio.AUDIO_KINDS


def test_audio_path_resolves_relative_paths_only_against_a_base(tmp_path):
    assert audio.audio_path("x/a.wav") == "x/a.wav"
    assert audio.audio_path("x/a.wav", tmp_path) == str(tmp_path / "x" / "a.wav")
    assert audio.audio_path("/abs/a.wav", tmp_path) == "/abs/a.wav"


def test_read_audio_from_a_file_a_pipe_and_an_ark(tmp_path, wav):
    expected, _ = sf.read(wav, dtype="float32")
    samples, rate = audio.read_audio("a.wav", base=tmp_path)
    assert rate == 16000 and samples.dtype == np.float32 and np.array_equal(samples, expected)
    samples, rate = audio.read_audio(f"cat {wav} |")
    assert rate == 16000 and np.array_equal(samples, expected)
    ark, scp = tmp_path / "w.ark", tmp_path / "w.scp"
    pcm = (tone_samples(0.25, 8000) * 32767).astype(np.int16)
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp}") as writer:
        writer("r1", (8000, pcm))
    value = scp.read_text().split()[1]
    samples, rate = audio.read_audio(value)
    assert rate == 8000 and samples.dtype == np.float32
    np.testing.assert_allclose(samples, pcm / 32768.0, atol=1e-7)  # 16-bit scaled to [-1, 1]


def test_read_audio_keeps_channels_and_reports_failing_commands(tmp_path):
    stereo = tmp_path / "s.wav"
    write_tone(stereo, 0.1, channels=2)
    samples, _ = audio.read_audio(str(stereo))
    assert samples.shape == (1600, 2)
    with pytest.raises(RuntimeError, match="exited with status 3: oops"):
        audio.read_audio("echo oops >&2; exit 3 |")


def test_read_audio_header(tmp_path, wav):
    assert audio.read_audio_header(str(wav)) == audio.AudioHeader(16000, 1, 0.5)
    rate, channels, seconds = audio.read_audio_header(f"cat {wav} |")
    assert (rate, channels, seconds) == (16000, 1, 0.5)
    ark, scp = tmp_path / "w.ark", tmp_path / "w.scp"
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp}") as writer:
        writer("r1", (22050, (tone_samples(1.0, 22050, channels=2) * 32767).astype(np.int16)))
        writer("feats", np.zeros((3, 4), dtype=np.float32))
    values = dict(line.split() for line in scp.read_text().splitlines())
    assert audio.read_audio_header(values["r1"]) == (22050, 2, 1.0)
    with pytest.raises(RuntimeError, match="holds a matrix"):
        audio.read_audio_header(values["feats"])


def test_read_recording_reads_mono_files_as_espnet_does(tmp_path, wav):
    samples, rate = audio.read_recording(tmp_path, "r1", str(wav))
    assert rate == 16000 and samples.ndim == 1 and len(samples) == 8000
    with pytest.raises(DataDirError, match=r"wav.scp: recording 'r1' is a piped command"):
        audio.read_recording(tmp_path, "r1", f"cat {wav} |")
    with pytest.raises(DataDirError, match=r"recording 'r1': cannot read .*missing.wav"):
        audio.read_recording(tmp_path, "r1", str(tmp_path / "missing.wav"))
    stereo = tmp_path / "s.wav"
    write_tone(stereo, 0.1, channels=2)
    with pytest.raises(DataDirError, match="has 2 channels"):
        audio.read_recording(tmp_path, "r1", str(stereo))


def test_cut_segment():
    x = np.arange(100, dtype=np.float32)
    assert np.array_equal(audio.cut_segment(x, 10, Segment("r", 1.0, 2.5)), x[10:25])
    assert np.array_equal(audio.cut_segment(x, 10, Segment("r", 9.0, -1)), x[90:])


def test_utterance_audio_cuts_segments_and_reads_each_recording_once(tmp_path, wav, monkeypatch):
    data = KaldiDataDir(
        wav_scp={"rec": str(wav)},
        text={"u1": "A", "u2": "B"},
        utt2spk={"u1": "s", "u2": "s"},
        segments={"u1": Segment("rec", 0.0, 0.25), "u2": Segment("rec", 0.25, -1)},
    )
    reads = []
    read = audio.read_recording
    monkeypatch.setattr(audio, "read_recording", lambda *a: reads.append(a[1]) or read(*a))
    out = list(audio.utterance_audio(data, ["u2", "u1"], tmp_path))
    assert reads == ["rec"]
    assert [(u, len(x), r) for u, x, r in out] == [("u2", 4000, 16000), ("u1", 4000, 16000)]
    assert all(x.flags["C_CONTIGUOUS"] for _, x, _ in out)
    data.wav_scp = {}
    with pytest.raises(DataDirError, match="recording 'rec' of utterance 'u1' is missing"):
        list(audio.utterance_audio(data, ["u1"], tmp_path))


def test_wav_truncation(tmp_path, wav):
    assert audio.wav_truncation(wav) is None
    flac = tmp_path / "a.flac"
    write_tone(flac, 0.1)
    assert audio.wav_truncation(flac) is None
    cut = tmp_path / "cut.wav"
    cut.write_bytes(wav.read_bytes()[:-1000])
    declared, present = audio.wav_truncation(cut)
    assert declared == 16000 and present == 15000


def test_recording_rates_reads_files_and_skips_pipes_and_arks(tmp_path, wav):
    scp = tmp_path / "wav.scp"
    scp.write_text(f"a {wav}\nb cat {wav} |\nc {tmp_path}/w.ark:12\n")
    assert audio.recording_rates(scp) == {"a": (16000, str(wav))}
    assert audio.recording_rates(scp, keys=["b"]) == {}
