"""Data dir validation: each kind of bad input gives one error naming file, line/key and fix."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from espnet_ext.bin import validate_data_dir as validate_cli
from espnet_ext.data.validate import DataDirError, validate_data_dir
from helpers import tone_samples, write_tone

UTTS = {  # utt -> (speaker, transcript, seconds)
    "s1-u1": ("s1", "HELLO WORLD", 0.5),
    "s1-u2": ("s1", "GOOD MORNING", 0.25),
    "s2-u1": ("s2", "YES", 0.75),
    "s2-u2": ("s2", "NO WAY", 0.5),
}


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A valid 2-speaker x 2-utterance data dir with 16 kHz mono FLAC/WAV files."""
    audio = tmp_path / "audio"
    audio.mkdir()
    d = tmp_path / "train"
    d.mkdir()
    wav_scp, text, utt2spk, utt2dur = [], [], [], []
    for i, (utt, (spk, words, sec)) in enumerate(UTTS.items()):
        path = audio / f"{utt}.{'flac' if i % 2 else 'wav'}"
        write_tone(path, sec)
        wav_scp.append(f"{utt} {path}")
        text.append(f"{utt} {words}")
        utt2spk.append(f"{utt} {spk}")
        utt2dur.append(f"{utt} {sec}")
    for name, lines in (("wav.scp", wav_scp), ("text", text), ("utt2spk", utt2spk), ("utt2dur", utt2dur)):
        (d / name).write_text("\n".join(lines) + "\n")
    (d / "spk2utt").write_text("s1 s1-u1 s1-u2\ns2 s2-u1 s2-u2\n")
    (d / "spk2gender").write_text("s1 f\ns2 m\n")
    return d


def _snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _replace_line(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_valid_dir_summary(data_dir):
    summary = validate_data_dir(data_dir)
    assert (summary.num_utterances, summary.num_speakers, summary.num_recordings) == (4, 2, 4)
    assert summary.total_seconds == pytest.approx(2.0)
    assert summary.line() == f"{data_dir}: 4 utts, 2 speakers, 0.00 h"


def _write_audio(d: Path, utt: str, name: str, rate: int = 16000, channels: int = 1) -> None:
    """Points `utt` of wav.scp at a new 0.5 s tone file audio/`name`."""
    path = write_tone(d.parent / "audio" / name, 0.5, rate, channels)
    lines = (d / "wav.scp").read_text().splitlines()
    (d / "wav.scp").write_text(
        "".join(f"{utt} {path}\n" if line.split()[0] == utt else line + "\n" for line in lines)
    )


# Each case: (id, function that breaks the dir, substrings the message must contain).
BAD_CASES = [
    ("missing_wav_scp", lambda d: (d / "wav.scp").unlink(), ["wav.scp", "required file is missing"]),
    ("missing_text", lambda d: (d / "text").unlink(), ["/text", "required file is missing"]),
    ("missing_spk2utt", lambda d: (d / "spk2utt").unlink(), ["spk2utt", "missing", "awk", "utt2spk"]),
    (
        "unsorted_text",
        lambda d: (d / "text").write_text(
            "s1-u2 GOOD MORNING\ns1-u1 HELLO WORLD\ns2-u1 YES\ns2-u2 NO WAY\n"
        ),
        ["text line 2", "not sorted", "'s1-u1'", "'s1-u2'", "LC_ALL=C sort"],
    ),
    (
        "duplicate_key",
        lambda d: _replace_line(d / "utt2spk", "s2-u1 s2\n", "s2-u1 s2\ns2-u1 s2\n"),
        ["utt2spk line 4", "duplicate key 's2-u1'", "line 3"],
    ),
    (
        "key_missing_from_text",
        lambda d: _replace_line(d / "text", "s2-u1 YES\n", ""),
        ["text", "'s2-u1'", "is in wav.scp but missing from text"],
    ),
    (
        "extra_key_in_utt2spk",
        lambda d: _replace_line(d / "utt2spk", "s2-u2 s2\n", "s2-u2 s2\ns2-u3 s2\n"),
        ["'s2-u3'", "is in utt2spk but missing from wav.scp"],
    ),
    (
        "spk2utt_inconsistent",
        lambda d: (d / "spk2utt").write_text("s1 s1-u1\ns2 s1-u2 s2-u1 s2-u2\n"),
        ["spk2utt line 1", "speaker 's1'", "lacks 's1-u2'", "regenerate"],
    ),
    (
        "speaker_order",
        lambda d: (_replace_line(d / "utt2spk", "s1-u2 s1", "s1-u2 s3"),
                   (d / "spk2utt").write_text("s1 s1-u1\ns2 s2-u1 s2-u2\ns3 s1-u2\n"),
                   (d / "spk2gender").write_text("s1 f\ns2 m\ns3 f\n")),
        ["utt2spk line", "'s1-u2'", "speaker order", "prefix"],
    ),
    (
        "malformed_line",
        lambda d: _replace_line(d / "utt2spk", "s1-u2 s1\n", "s1-u2\n"),
        ["utt2spk line 2", "'s1-u2' has no value"],
    ),
    (
        "leading_space",
        lambda d: _replace_line(d / "wav.scp", "s1-u1 ", " s1-u1 "),
        ["wav.scp line 1", "starts with whitespace"],
    ),
    (
        "windows_line_endings",
        lambda d: (d / "text").write_bytes((d / "text").read_bytes().replace(b"\n", b"\r\n")),
        ["text line 1", "Windows line ending", "dos2unix"],
    ),
    (
        "empty_transcript",
        lambda d: _replace_line(d / "text", "s2-u1 YES\n", "s2-u1\n"),
        ["text line 3", "'s2-u1'", "empty transcript"],
    ),
    (
        "utt2dur_mismatch",
        lambda d: _replace_line(d / "utt2dur", "s1-u2 0.25\n", ""),
        ["utt2dur", "'s1-u2'", "missing from utt2dur"],
    ),
    (
        "spk2gender_mismatch",
        lambda d: (d / "spk2gender").write_text("s1 f\n"),
        ["spk2gender", "speaker 's2'"],
    ),
    (
        "path_with_spaces",
        lambda d: _replace_line(d / "wav.scp", "s2-u2 ", "s2-u2 sox a.wav -t wav - "),
        ["wav.scp line 4", "'s2-u2'", "does not end in '|'"],
    ),
    (
        "missing_audio",
        lambda d: (d.parent / "audio" / "s2-u1.wav").unlink(),
        ["wav.scp line 3", "'s2-u1'", "does not exist"],
    ),
    (
        "unreadable_audio",
        lambda d: (d.parent / "audio" / "s1-u2.flac").write_bytes(b"not audio at all"),
        ["wav.scp line 2", "'s1-u2'", "cannot read audio"],
    ),
    (
        "wrong_sample_rate",
        lambda d: _write_audio(d, "s2-u2", "s2-u2_8k.wav", 8000),
        ["wav.scp line 4", "'s2-u2'", "sample rate 8000 Hz, expected 16000 Hz", "s2-u2_8k.wav", "sox"],
    ),
    (
        "stereo",
        lambda d: _write_audio(d, "s1-u1", "s1-u1_st.wav", channels=2),
        ["wav.scp line 1", "'s1-u1'", "2 channels, expected mono", "s1-u1_st.wav"],
    ),
    (
        "segments_unknown_recording",
        lambda d: (d / "segments").write_text(
            "s1-u1 s1-u1 0 0.5\ns1-u2 s1-u2 0 0.25\ns2-u1 recX 0 0.75\ns2-u2 s2-u2 0 0.5\n"
        ),
        ["segments line 3", "'s2-u1'", "'recX'", "not in wav.scp"],
    ),
    (
        "segment_past_end",
        lambda d: (d / "segments").write_text(
            "s1-u1 s1-u1 0 0.5\ns1-u2 s1-u2 0 0.25\ns2-u1 s2-u1 0 9.0\ns2-u2 s2-u2 0 0.5\n"
        ),
        ["segments line 3", "'s2-u1'", "after the end"],
    ),
]


@pytest.mark.parametrize("breaker,expected", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_input_gives_clear_error_and_changes_nothing(data_dir, breaker, expected):
    breaker(data_dir)
    before = _snapshot(data_dir.parent)
    with pytest.raises(DataDirError) as err:
        validate_data_dir(data_dir)
    message = str(err.value)
    for part in expected:
        assert part in message, f"{part!r} not in: {message}"
    assert _snapshot(data_dir.parent) == before


def test_valid_dir_is_not_modified(data_dir):
    before = _snapshot(data_dir.parent)
    validate_data_dir(data_dir)
    assert _snapshot(data_dir.parent) == before


def test_missing_dir(tmp_path):
    with pytest.raises(DataDirError, match="does not exist.*local/data.sh"):
        validate_data_dir(tmp_path / "nope")


def test_audio_checks_can_be_skipped_or_relaxed(data_dir):
    (data_dir.parent / "audio" / "s2-u1.wav").unlink()
    summary = validate_data_dir(data_dir, check_audio=False)
    assert summary.total_seconds == pytest.approx(2.0)  # falls back to utt2dur
    _write_audio(data_dir, "s2-u2", "8k.wav", 8000)
    (data_dir / "utt2dur").unlink()
    assert validate_data_dir(data_dir, check_audio=False).total_seconds is None


def test_piped_commands_are_checked_only_when_asked(data_dir, tmp_path):
    eight_k = tmp_path / "audio" / "8k.wav"
    write_tone(eight_k, 0.5, 8000)
    _replace_line(data_dir / "wav.scp", f"s2-u2 {tmp_path}/audio/s2-u2.flac", f"s2-u2 cat {eight_k} |")
    assert validate_data_dir(data_dir).num_recordings == 4  # pipe not run: only its form is checked
    with pytest.raises(DataDirError, match="line 4: recording 's2-u2': sample rate 8000 Hz"):
        validate_data_dir(data_dir, run_pipes=True)
    _replace_line(data_dir / "wav.scp", f"cat {eight_k} |", "false |")
    with pytest.raises(DataDirError, match="'s2-u2': cannot read audio 'false |'.*exited with status 1"):
        validate_data_dir(data_dir, run_pipes=True)
    _replace_line(data_dir / "wav.scp", "false |", " |")
    with pytest.raises(DataDirError, match="empty command before '|'"):
        validate_data_dir(data_dir)


def test_kaldi_ark_references(data_dir, tmp_path):
    ark, scp = tmp_path / "audio" / "wavs.ark", tmp_path / "audio" / "wavs.scp"
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp}") as writer:
        for utt, (_, _, sec) in UTTS.items():
            writer(utt, (16000, (tone_samples(sec) * 32767).astype(np.int16)))
    (data_dir / "wav.scp").write_text(scp.read_text())
    assert validate_data_dir(data_dir).total_seconds == pytest.approx(2.0)
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp}") as writer:
        for utt, (_, _, sec) in UTTS.items():
            writer(utt, (22050, (tone_samples(sec, 22050) * 32767).astype(np.int16)))
    (data_dir / "wav.scp").write_text(scp.read_text())
    with pytest.raises(DataDirError, match="wav.scp line 1: recording 's1-u1': sample rate 22050 Hz"):
        validate_data_dir(data_dir)


def test_cli_exit_status_and_messages(data_dir, capsys):
    assert validate_cli.main([str(data_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"{data_dir}: 4 utts, 2 speakers, 0.00 h"
    (data_dir / "spk2utt").unlink()
    assert validate_cli.main([str(data_dir)]) == 1
    assert "spk2utt: required file is missing" in capsys.readouterr().err
    # The module entry point, as the recipe calls it.
    proc = subprocess.run(
        [sys.executable, "-m", "espnet_ext.bin.validate_data_dir", str(data_dir)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1 and "spk2utt" in proc.stderr
