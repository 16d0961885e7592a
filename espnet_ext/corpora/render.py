"""Turn engine WAV output into a reproducible 16 kHz mono FLAC with speaker and room effects.

Chain per utterance: sox (`-R -D`: fixed random seed, no dither) applies the speaker's vocal-tract
scaling and EQ, optional reverb, and resamples to 16 kHz as 32-bit float; numpy optionally mixes
seeded noise at a target SNR, normalizes the peak and rounds to 16-bit PCM (no dither); soundfile
writes FLAC to a temporary name that is then renamed. Same inputs => byte-identical files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
from pathlib import Path
from typing import List, Optional

import numpy as np
import soundfile

from espnet_ext.utils.atomic import atomic_output

SAMPLE_RATE = 16000
PEAK_LEVEL = 0.7  # ~ -3 dBFS: loud enough, with headroom.
NOISE_COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # exponent of the 1/f^a power spectrum


@dataclasses.dataclass(frozen=True)
class Condition:
    """Recording condition of one utterance.

    Attributes:
        kind: "clean", "noisy" or "reverb" (written to utt2condition).
        snr_db: Signal-to-noise ratio in dB of the added noise ("noisy" only).
        noise_color: "white", "pink" or "brown" ("noisy" only).
        reverberance: sox reverb reverberance in percent ("reverb" only).
        room_scale: sox reverb room scale in percent ("reverb" only).
    """

    kind: str = "clean"
    snr_db: Optional[float] = None
    noise_color: Optional[str] = None
    reverberance: Optional[float] = None
    room_scale: Optional[float] = None

    def sox_effects(self) -> List[str]:
        """sox effects of this condition (reverb, with a tail of padding so it is not cut)."""
        if self.kind != "reverb":
            return []
        return ["pad", "0", "0.3", "reverb", f"{self.reverberance:.1f}", "50", f"{self.room_scale:.1f}"]


def seed_from(*parts: object) -> int:
    """A 64-bit seed from any values, stable across machines and Python runs (unlike hash())."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def apply_sox(wav: bytes, effects: List[str], what: str) -> np.ndarray:
    """Run sox on WAV bytes; return 16 kHz mono float32 samples.

    Args:
        wav: Input WAV file contents (any rate, mono).
        effects: sox effect arguments applied before resampling to 16 kHz.
        what: Label for error messages.

    Raises:
        RuntimeError: sox failed or printed no audio.
    """
    cmd = (
        ["sox", "-R", "-D", "-V1", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32",
         "-L", "-c", "1", "-"]
        # Headroom first: EQ boosts must not clip inside sox.
        + ["gain", "-6"]
        + effects
        + ["rate", "-h", str(SAMPLE_RATE)]
    )
    proc = subprocess.run(cmd, input=wav, capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(
            f"{what}: `{' '.join(cmd)}` failed (exit {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()[-500:]}"
        )
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float64)


def colored_noise(num_samples: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise with a 1/f^a power spectrum (white a=0, pink a=1, brown a=2)."""
    white = rng.standard_normal(num_samples)
    alpha = NOISE_COLORS[color]
    if alpha == 0.0:
        noise = white
    else:
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(num_samples, d=1.0 / SAMPLE_RATE)
        freqs[0] = freqs[1] if num_samples > 1 else 1.0  # no division by zero at DC
        spectrum *= freqs ** (-alpha / 2.0)
        spectrum[0] = 0.0
        noise = np.fft.irfft(spectrum, n=num_samples)
    power = float(np.mean(noise**2))
    return noise / np.sqrt(power) if power > 0 else noise


def mix_noise(signal: np.ndarray, snr_db: float, color: str, rng: np.random.Generator) -> np.ndarray:
    """Add noise so that signal power / noise power = snr_db (power over the whole utterance)."""
    signal_power = float(np.mean(signal**2))
    noise = colored_noise(len(signal), color, rng)
    return signal + noise * np.sqrt(signal_power / (10.0 ** (snr_db / 10.0)))


def to_pcm16(signal: np.ndarray) -> np.ndarray:
    """Peak-normalize to PEAK_LEVEL and round to int16 (deterministic: no dither)."""
    peak = float(np.max(np.abs(signal))) if len(signal) else 0.0
    if peak > 0:
        signal = signal * (PEAK_LEVEL / peak)
    return np.round(signal * 32767.0).astype(np.int16)


def write_flac_atomic(path: Path, samples: np.ndarray) -> None:
    """Write int16 samples as 16 kHz FLAC via a temporary file and rename (never half a file)."""
    with atomic_output(path) as tmp:
        soundfile.write(str(tmp), samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")


def render_utterance(
    wav: bytes, speaker_effects: List[str], condition: Condition, noise_seed: int, out_path: Path, what: str
) -> None:
    """Apply speaker effects and the condition to engine output and write `out_path` (FLAC).

    Args:
        wav: Engine output (WAV bytes).
        speaker_effects: sox effects of the speaker (vocal tract, EQ).
        condition: Recording condition.
        noise_seed: Seed of the noise generator (used for "noisy" only).
        out_path: Destination .flac.
        what: Label for error messages.
    """
    signal = apply_sox(wav, speaker_effects + condition.sox_effects(), what)
    if condition.kind == "noisy":
        rng = np.random.default_rng(noise_seed)
        signal = mix_noise(signal, condition.snr_db, condition.noise_color, rng)
    write_flac_atomic(out_path, to_pcm16(signal))
