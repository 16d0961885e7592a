"""Synthetic speakers: a Debian TTS base voice plus pitch, rate, vocal-tract and EQ changes.

A speaker is a `SpeakerVoice`: one `BaseVoice` (espeak-ng, flite or festival) and four knobs:

* pitch factor: mean F0 relative to the voice's own, set inside the engine (espeak-ng `-p`, flite
  `int_f0_target_mean`, festival diphone `target_f0_mean`; fixed at 1.0 where the engine has none);
* rate factor: speaking rate, set inside the engine (espeak-ng `-s`, flite `duration_stretch`,
  festival `Duration_Stretch` / HTS `-r`);
* vocal-tract factor f: sox `speed f` scales formants and F0 by f (a shorter or longer vocal
  tract) and shortens the duration by f; the engine speaks f times slower to compensate, which is
  much cheaper than a time-stretch (`tempo`) after the fact;
* EQ: a sox equalizer/bass/treble preset (a different "microphone and room colour").

`make_speakers(n, seed)` returns the same list for the same arguments on every machine. Base voices
come from a fixed catalogue ordered to alternate engines and genders, so the default 12 speakers
span all three engines and both genders; past the catalogue, base voices repeat with clearly
different vocal-tract factors. Changes stay moderate so that speech remains intelligible.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Dict, List, Optional, Tuple

ENGINES = ("espeak-ng", "flite", "festival")


@dataclasses.dataclass(frozen=True)
class BaseVoice:
    """A voice of a TTS engine installed from Debian main.

    Attributes:
        engine: "espeak-ng", "flite" or "festival".
        name: Engine voice name: espeak-ng `<language>+<variant>`, flite `-voice` name, festival
            `voice_<name>` function suffix.
        gender: "f" or "m" (as in Kaldi's spk2gender).
        nominal_f0_hz: Typical mean F0 in Hz, the reference of the pitch factor; None if the
            engine cannot change this voice's pitch.
        native_rate_hz: Sample rate the engine produces, in Hz.
        description: A human-readable label.
    """

    engine: str
    name: str
    gender: str
    nominal_f0_hz: Optional[float]
    native_rate_hz: int
    description: str

    @property
    def key(self) -> str:
        """`<engine>:<name>`, as written to utt2voice."""
        return f"{self.engine}:{self.name}"


# Ordered so that any prefix mixes engines and genders; the default 12 speakers use the first 12
# (6 female, 6 male). Later: festival's HTS voice (the same SLT speaker as flite's "slt", and the
# slowest voice at ~150 ms per sentence) and flite "rms" (slow too), to keep the default build fast.
# flite "rms" ignores int_f0_target_mean and festival's HTS voice ignores target_f0_mean, hence
# nominal_f0_hz=None for them. flite "kal" is 8 kHz (narrow band), the others 16-22.05 kHz.
BASE_VOICES: Tuple[BaseVoice, ...] = (
    BaseVoice("flite", "slt", "f", 170.0, 16000, "flite CMU SLT (US female)"),
    BaseVoice("espeak-ng", "en-us+m3", "m", 120.0, 22050, "espeak-ng US English, male 3"),
    BaseVoice("festival", "kal_diphone", "m", 105.0, 16000, "festival KAL diphone (US male)"),
    BaseVoice("espeak-ng", "en-gb+f3", "f", 200.0, 22050, "espeak-ng British English, female 3"),
    BaseVoice("flite", "kal16", "m", 100.0, 16000, "flite KAL 16 kHz (US male)"),
    BaseVoice("espeak-ng", "en-gb-x-rp+f5", "f", 200.0, 22050, "espeak-ng RP English, female 5"),
    BaseVoice("espeak-ng", "en-gb-scotland+f1", "f", 200.0, 22050, "espeak-ng Scottish English, female 1"),
    BaseVoice("flite", "awb", "m", 125.0, 16000, "flite CMU AWB (Scottish male)"),
    BaseVoice("espeak-ng", "en-us+f2", "f", 200.0, 22050, "espeak-ng US English, female 2"),
    BaseVoice("festival", "ked_diphone", "m", 105.0, 16000, "festival KED diphone (US male)"),
    BaseVoice("espeak-ng", "en-029+f4", "f", 200.0, 22050, "espeak-ng Caribbean English, female 4"),
    BaseVoice("flite", "kal", "m", 100.0, 8000, "flite KAL 8 kHz (US male, narrow band)"),
    BaseVoice("festival", "cmu_us_slt_arctic_hts", "f", None, 32000, "festival CMU SLT HTS (US female)"),
    BaseVoice("flite", "rms", "m", None, 16000, "flite CMU RMS (US male)"),
    BaseVoice("espeak-ng", "en-us-nyc+m5", "m", 120.0, 22050, "espeak-ng New York English, male 5"),
    BaseVoice("espeak-ng", "en-gb-x-gbcwmd+f1", "f", 200.0, 22050, "espeak-ng West Midlands, female 1"),
    BaseVoice("espeak-ng", "en-gb-scotland+m1", "m", 120.0, 22050, "espeak-ng Scottish English, male 1"),
    BaseVoice("espeak-ng", "en-gb-x-gbclan+m2", "m", 120.0, 22050, "espeak-ng Lancaster English, male 2"),
    BaseVoice("espeak-ng", "en-us+m7", "m", 120.0, 22050, "espeak-ng US English, male 7"),
)

# EQ presets as sox effect argument lists ("microphone/room colour"); gains in dB.
EQ_PRESETS: Dict[str, Tuple[Tuple[str, ...], ...]] = {
    "flat": (),
    "bright": (("treble", "+4", "3500"),),
    "warm": (("bass", "+5", "180"), ("treble", "-3", "4000")),
    "nasal": (("equalizer", "1200", "1.0q", "+5"),),
    "muffled": (("treble", "-7", "2500"),),
    "thin": (("bass", "-8", "250"), ("equalizer", "2500", "1.0q", "+3")),
    "presence": (("equalizer", "3000", "0.8q", "+5"), ("bass", "-3", "120")),
}

# Ranges of the per-speaker knobs: moderate, so speech stays intelligible.
PITCH_RANGE = (0.88, 1.14)
RATE_RANGE = (0.88, 1.12)
VTL_JITTER = 0.035
# Offsets of the vocal-tract factor for the 1st, 2nd, ... speaker built on the same base voice.
VTL_OFFSETS = (0.0, -0.07, 0.07, -0.035, 0.035, -0.1, 0.1)


@dataclasses.dataclass(frozen=True)
class SpeakerVoice:
    """One synthetic speaker.

    Attributes:
        speaker_id: Kaldi/LibriSpeech speaker id (4 digits, e.g. "1001").
        base: The TTS base voice.
        pitch_factor: Mean F0 relative to the base voice (1.0 where the engine cannot change it).
        rate_factor: Final speaking rate relative to the engine default (>1 is faster).
        vtl_factor: Vocal-tract scaling: formants and F0 multiplied by this.
        eq: Name of the EQ preset (key of EQ_PRESETS).
    """

    speaker_id: str
    base: BaseVoice
    pitch_factor: float
    rate_factor: float
    vtl_factor: float
    eq: str

    @property
    def gender(self) -> str:
        """"f" or "m"."""
        return self.base.gender

    @property
    def engine_rate(self) -> float:
        """Rate factor to ask the engine for: `speed vtl_factor` afterwards speeds it up again."""
        return self.rate_factor / self.vtl_factor

    def sox_effects(self) -> List[str]:
        """sox effect arguments for the vocal tract and EQ (not including resampling)."""
        effects: List[str] = []
        if abs(self.vtl_factor - 1.0) > 1e-6:
            effects += ["speed", f"{self.vtl_factor:.4f}"]
        for effect in EQ_PRESETS[self.eq]:
            effects += list(effect)
        return effects

    def describe(self) -> str:
        """Short label for SPEAKERS.TXT, e.g. `flite:slt p1.05 r0.97 vtl1.02 eq=warm`."""
        return (
            f"{self.base.key} p{self.pitch_factor:.2f} r{self.rate_factor:.2f} "
            f"vtl{self.vtl_factor:.3f} eq={self.eq}"
        )

    def to_dict(self) -> Dict[str, object]:
        """Plain metadata (JSON-ready)."""
        return {
            "speaker_id": self.speaker_id,
            "engine": self.base.engine,
            "base_voice": self.base.name,
            "gender": self.base.gender,
            "pitch_factor": self.pitch_factor,
            "rate_factor": self.rate_factor,
            "vtl_factor": self.vtl_factor,
            "eq": self.eq,
            "eq_effects": [list(e) for e in EQ_PRESETS[self.eq]],
            "description": self.base.description,
        }


def _round(x: float) -> float:
    # Rounded so that values print identically everywhere and metadata stays readable.
    return round(x, 3)


def make_speakers(
    num_speakers: int, seed: int = 1, base_voices: Tuple[BaseVoice, ...] = BASE_VOICES
) -> List[SpeakerVoice]:
    """The deterministic list of synthetic speakers for a seed.

    Args:
        num_speakers: How many speakers (1..8999). Beyond len(base_voices), base voices repeat
            with other vocal-tract offsets, so all speakers still differ.
        seed: Seeds the pitch, rate, vocal-tract and EQ choices.
        base_voices: The catalogue to draw from, in order.

    Returns:
        Speakers with ids "1001", "1002", ...

    Raises:
        ValueError: num_speakers out of range.
    """
    if not 1 <= num_speakers <= 8999:
        raise ValueError(f"num_speakers must be in 1..8999 (4-digit speaker ids), got {num_speakers}")
    speakers = []
    eq_names = sorted(EQ_PRESETS)
    for index in range(num_speakers):
        base = base_voices[index % len(base_voices)]
        reuse = index // len(base_voices)
        # String seeds hash with SHA-512 in `random`, so this is stable across machines/versions.
        rng = random.Random(f"synth-speaker:{seed}:{index}")
        pitch = rng.uniform(*PITCH_RANGE) if base.nominal_f0_hz is not None else 1.0
        rate = rng.uniform(*RATE_RANGE)
        offset = VTL_OFFSETS[reuse % len(VTL_OFFSETS)]
        vtl = 1.0 + offset + rng.uniform(-VTL_JITTER, VTL_JITTER) * (1.0 if reuse == 0 else 0.4)
        eq = rng.choice(eq_names)
        speakers.append(
            SpeakerVoice(
                speaker_id=f"{1001 + index}",
                base=base,
                pitch_factor=_round(pitch),
                rate_factor=_round(rate),
                vtl_factor=_round(vtl),
                eq=eq,
            )
        )
    return speakers
