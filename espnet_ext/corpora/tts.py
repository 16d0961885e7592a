"""Run the Debian TTS engines (espeak-ng, flite, festival) for a `SpeakerVoice`.

espeak-ng and flite start fast (~10-70 ms), so they run once per utterance and write WAV to
stdout. festival takes ~0.3 s to start but ~15 ms per sentence afterwards, so it synthesizes a
whole batch of sentences in one `festival --batch` process.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from espnet_ext.corpora.voices import SpeakerVoice

# Engine defaults the rate/pitch factors are relative to.
ESPEAK_DEFAULT_WPM = 175
ESPEAK_DEFAULT_PITCH = 50
FESTIVAL_VOICE_DIRS = {
    "kal_diphone": "english/kal_diphone",
    "ked_diphone": "english/ked_diphone",
    "cmu_us_slt_arctic_hts": "us/cmu_us_slt_arctic_hts",
}
# Festival's diphone voices set their own Duration_Stretch (kal: 1.1); the rate factor scales it.
FESTIVAL_DEFAULT_STRETCH = {"kal_diphone": 1.1, "ked_diphone": 1.0}

INSTALL_HINT = "install it with `bash tools/install.sh` (or apt-get install {packages})"


class TTSError(RuntimeError):
    """A TTS engine is missing or failed on a sentence."""


def check_tools(engines: Sequence[str]) -> None:
    """Fail early, with an install hint, if sox or a needed engine/voice is missing.

    Args:
        engines: Engine names in use ("espeak-ng", "flite", "festival").

    Raises:
        TTSError: Naming the missing program or voice and how to install it.
    """
    needed = {"sox": "sox libsox-fmt-all flac"}
    packages = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival"}
    for engine in engines:
        needed[engine] = packages[engine]
    for program, pkgs in needed.items():
        if shutil.which(program) is None:
            raise TTSError(f"'{program}' not found on PATH; " + INSTALL_HINT.format(packages=pkgs))
    if "festival" in engines:
        roots = [Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices")]
        for voice, sub in FESTIVAL_VOICE_DIRS.items():
            if not any((r / sub).is_dir() for r in roots):
                raise TTSError(
                    f"festival voice '{voice}' not found under {roots[0]}; "
                    + INSTALL_HINT.format(
                        packages="festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
                    )
                )


def _run(cmd: List[str], what: str, stdin: bytes = b"") -> bytes:
    proc = subprocess.run(cmd, input=stdin, capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        raise TTSError(
            f"{what}: `{' '.join(cmd)}` failed (exit {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()[-500:] or 'no audio written'}"
        )
    return proc.stdout


def engine_command(speaker: SpeakerVoice, sentence: str) -> Tuple[List[str], bytes]:
    """Command line and stdin that make espeak-ng or flite print one sentence as WAV on stdout.

    The engine reads the lower-cased transcript with a final period, so it says exactly its words.

    Raises:
        ValueError: For festival, which has no per-sentence command (see `synthesize_batch`).
    """
    base = speaker.base
    text = sentence.lower() + "."
    if base.engine == "espeak-ng":
        pitch = ESPEAK_DEFAULT_PITCH + (speaker.pitch_factor - 1.0) * 100.0
        cmd = [
            "espeak-ng", "-v", base.name,
            "-s", str(round(ESPEAK_DEFAULT_WPM * speaker.engine_rate)),
            "-p", str(min(99, max(0, round(pitch)))),
            "--stdout", "--stdin",
        ]
        return cmd, text.encode("utf-8")
    if base.engine == "flite":
        cmd = ["flite", "-voice", base.name, "--setf", f"duration_stretch={1.0 / speaker.engine_rate:.4f}"]
        if base.nominal_f0_hz is not None:
            cmd += ["--setf", f"int_f0_target_mean={base.nominal_f0_hz * speaker.pitch_factor:.1f}"]
        return cmd + ["-t", text, "-o", "/dev/stdout"], b""
    raise ValueError(f"engine '{base.engine}' has no per-sentence command")


def synthesize(speaker: SpeakerVoice, sentence: str) -> bytes:
    """WAV bytes of one sentence spoken by `speaker`."""
    if speaker.base.engine == "festival":
        return synthesize_batch(speaker, [sentence])[0]
    cmd, stdin = engine_command(speaker, sentence)
    return _run(cmd, f"speaker {speaker.speaker_id} ({speaker.base.key})", stdin=stdin)


def festival_script(speaker: SpeakerVoice, sentences: Sequence[str], out_paths: Sequence[Path]) -> str:
    """Scheme script that makes festival write one RIFF WAV per sentence."""
    name = speaker.base.name
    lines = [f"(voice_{name})"]
    if name in FESTIVAL_DEFAULT_STRETCH:
        stretch = FESTIVAL_DEFAULT_STRETCH[name] / speaker.engine_rate
        lines.append(f"(Parameter.set 'Duration_Stretch {stretch:.4f})")
    else:  # HTS voices: the engine's own speed option.
        lines.append(
            f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {speaker.engine_rate:.4f}))))'
        )
    if speaker.base.nominal_f0_hz is not None:
        f0 = speaker.base.nominal_f0_hz * speaker.pitch_factor
        lines.append(f"(set! int_lr_params (cons (list 'target_f0_mean {f0:.1f}) int_lr_params))")
    for sentence, path in zip(sentences, out_paths):
        # Transcripts hold only letters, apostrophes and spaces: nothing to escape in a string.
        lines.append(f'(utt.save.wave (SynthText "{sentence.lower()}.") "{path}" \'riff)')
    return "\n".join(lines) + "\n"


def synthesize_batch(speaker: SpeakerVoice, sentences: Sequence[str]) -> List[bytes]:
    """WAV bytes for each sentence; festival runs once for the whole batch."""
    if speaker.base.engine != "festival":
        return [synthesize(speaker, s) for s in sentences]
    with tempfile.TemporaryDirectory(prefix="festival_") as tmp:
        outs = [Path(tmp) / f"{i}.wav" for i in range(len(sentences))]
        script = Path(tmp) / "synth.scm"
        script.write_text(festival_script(speaker, sentences, outs))
        proc = subprocess.run(["festival", "--batch", str(script)], capture_output=True)
        missing = [o for o in outs if not o.is_file() or o.stat().st_size <= 44]
        if proc.returncode != 0 or missing:
            raise TTSError(
                f"speaker {speaker.speaker_id} ({speaker.base.key}): festival failed "
                f"(exit {proc.returncode}, {len(missing)} of {len(outs)} sentences without audio): "
                f"{proc.stderr.decode(errors='replace').strip()[-500:]}"
            )
        return [o.read_bytes() for o in outs]


def engine_versions() -> Dict[str, str]:
    """First line of each engine's version output (recorded in corpus metadata)."""
    versions = {}
    for name, cmd in {
        "espeak-ng": ["espeak-ng", "--version"],
        "flite": ["flite", "--version"],
        "festival": ["festival", "--version"],
        "sox": ["sox", "--version"],
    }.items():
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=10)
            text = (out.stdout or out.stderr).decode(errors="replace").strip().splitlines()
            versions[name] = text[0] if text else "unknown"
        except (OSError, subprocess.TimeoutExpired):
            versions[name] = "not installed"
    return versions
