"""Build the embedded default corpus: multi-speaker English synthesized from Debian TTS voices.

`build_synth_corpus` writes

    <out_dir>/LibriSpeech-like/SPEAKERS.TXT, speakers.json
    <out_dir>/LibriSpeech-like/<split>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac
    <out_dir>/LibriSpeech-like/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt
    <data_dir>/{train,dev,test}/  wav.scp text utt2spk spk2utt utt2dur utt2voice utt2condition
                                  spk2gender spk2voice

Every speaker has train, dev and test utterances; the WordNet sentence pool is shuffled and split
*before* sentences are given to speakers, so no dev/test sentence is ever in train. Each
utterance may get a recording condition (clean / noisy / reverb, seeded), recorded in
utt2condition so that a domain can be withheld later.

Reproducible: the same options give byte-identical audio (sox -R -D, seeded noise, no dither).
Resumable: each FLAC is written atomically, an interrupted build keeps what it rendered, and a
finished build (marker with a hash of the options) makes a re-run a no-op. Asking for different
options in the same folder is an error rather than a mix of two corpora.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import random
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import soundfile
from tqdm import tqdm

from espnet_ext.data.kaldi import PathLike, Utterance, kaldi_sort_key, write_data_dir
from espnet_ext.corpora.render import NOISE_COLORS, SAMPLE_RATE, Condition, render_utterance, seed_from
from espnet_ext.corpora.sentences import load_wordnet_sentences, sentences_digest
from espnet_ext.corpora.tts import check_tools, engine_versions, synthesize_batch
from espnet_ext.corpora.voices import SpeakerVoice, make_speakers
from espnet_ext.utils.atomic import write_text_atomic

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
CHAPTERS = {"train": "100", "dev": "200", "test": "300"}  # LibriSpeech-style chapter id per split
TREE_NAME = "LibriSpeech-like"
OPTIONS_FILE = "synth_corpus.json"
COMPLETE_MARKER = ".complete"
DATA_DIR_MARKER = ".synth_corpus_hash"
# Bump when the rendering changes in a way that changes the audio of the same options.
FORMAT_VERSION = 1
JOB_SIZE = 25  # utterances per parallel job (festival starts once per job)
DEFAULT_REVERBERANCE = (20.0, 60.0)

Range = Tuple[float, float]


class CorpusOptionsError(ValueError):
    """The output folder already holds a corpus built with other options."""


@dataclasses.dataclass(frozen=True)
class SynthCorpusOptions:
    """Everything that determines the corpus content (not where it goes or how fast).

    Attributes:
        num_speakers: Number of synthetic speakers.
        train_per_speaker: Training utterances per speaker.
        dev_per_speaker: Development utterances per speaker.
        test_per_speaker: Test utterances per speaker.
        seed: Seeds speakers, sentence choice and conditions.
        noise_snr_db: (min, max) SNR in dB of the "noisy" condition; None: no noisy utterances.
        reverb: (min, max) sox reverberance in percent of the "reverb" condition; None: none.
        min_words: Fewest words per sentence.
        max_words: Most words per sentence.
    """

    num_speakers: int = 12
    train_per_speaker: int = 100
    dev_per_speaker: int = 10
    test_per_speaker: int = 10
    seed: int = 1
    noise_snr_db: Optional[Range] = None
    reverb: Optional[Range] = None
    min_words: int = 3
    max_words: int = 15

    def __post_init__(self) -> None:
        for name in ("num_speakers", "train_per_speaker", "dev_per_speaker", "test_per_speaker"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}")
        for name in ("noise_snr_db", "reverb"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"{name} must be a (min, max) pair with min <= max, got {value}")
        if self.reverb is not None and not (0 <= self.reverb[0] and self.reverb[1] <= 100):
            raise ValueError(f"reverb reverberance must be within 0..100 percent, got {self.reverb}")

    @property
    def conditions(self) -> List[str]:
        """Recording conditions in use, e.g. ["clean", "noisy"]."""
        return ["clean"] + (["noisy"] if self.noise_snr_db else []) + (["reverb"] if self.reverb else [])

    def per_split(self) -> Dict[str, int]:
        """Utterances per speaker in each split."""
        return {"train": self.train_per_speaker, "dev": self.dev_per_speaker, "test": self.test_per_speaker}


@dataclasses.dataclass(frozen=True)
class PlannedUtterance:
    """One utterance to render.

    Attributes:
        utt_id: `<spk>-<chapter>-<nnnn>`.
        split: "train", "dev" or "test".
        speaker_index: Index into the speaker list.
        text: Transcript (and what the engine says).
        condition: Recording condition.
        audio_path: Destination FLAC (absolute).
    """

    utt_id: str
    split: str
    speaker_index: int
    text: str
    condition: Condition
    audio_path: Path


@dataclasses.dataclass
class SynthCorpusSummary:
    """Result of a build.

    Attributes:
        corpus_dir: Root of the audio tree and metadata.
        data_dir: Parent of the Kaldi dirs train/dev/test.
        num_speakers: Number of speakers.
        num_utterances: Utterances per split.
        seconds: Audio duration per split in seconds.
        rendered: Utterances rendered by this call (0 for a no-op re-run).
        options_hash: Hash of the options (identifies the corpus).
    """

    corpus_dir: Path
    data_dir: Path
    num_speakers: int
    num_utterances: Dict[str, int]
    seconds: Dict[str, float]
    rendered: int
    options_hash: str

    @property
    def hours(self) -> float:
        """Total audio in hours, all splits."""
        return sum(self.seconds.values()) / 3600.0


def _as_range(value: Union[None, bool, float, Sequence[float]], default: Optional[Range]) -> Optional[Range]:
    """None/False -> None; True -> default; x -> (x, x); (a, b) -> (a, b)."""
    if value is None or value is False:
        return None
    if value is True:
        return default
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    lo, hi = value
    return (float(lo), float(hi))


def options_hash(options: SynthCorpusOptions, sentence_pool_sha1: str) -> str:
    """Hash of everything that determines the audio and the files."""
    payload = dict(dataclasses.asdict(options), format_version=FORMAT_VERSION, sentences=sentence_pool_sha1)
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def split_sentences(
    pool: Sequence[str], options: SynthCorpusOptions
) -> Dict[str, List[List[str]]]:
    """Give each speaker its sentences: `{split: [sentences of speaker 0, of speaker 1, ...]}`.

    The pool is shuffled with the seed and cut into disjoint dev, test and train parts first, so a
    dev/test sentence never appears in train. Dev and test sentences are unique across speakers;
    train sentences too while the pool lasts, then they are reused by other speakers.

    Raises:
        ValueError: The pool is too small for the dev/test sets plus one speaker's training set.
    """
    shuffled = list(pool)
    random.Random(f"synth-sentences:{options.seed}").shuffle(shuffled)
    n = options.num_speakers
    n_dev, n_test = n * options.dev_per_speaker, n * options.test_per_speaker
    dev, test, train = shuffled[:n_dev], shuffled[n_dev:n_dev + n_test], shuffled[n_dev + n_test:]
    if len(train) < options.train_per_speaker:
        raise ValueError(
            f"only {len(pool)} sentences available: too few for {n} speakers x "
            f"({options.dev_per_speaker} dev + {options.test_per_speaker} test) plus "
            f"{options.train_per_speaker} training sentences; lower the per-speaker counts"
        )
    if len(train) < n * options.train_per_speaker:
        logger.warning(
            "%d training sentences for %d speakers x %d utterances: some speakers share sentences",
            len(train), n, options.train_per_speaker,
        )
    t = options.train_per_speaker
    return {
        "train": [[train[(k * t + i) % len(train)] for i in range(t)] for k in range(n)],
        "dev": [dev[k * options.dev_per_speaker:(k + 1) * options.dev_per_speaker] for k in range(n)],
        "test": [test[k * options.test_per_speaker:(k + 1) * options.test_per_speaker] for k in range(n)],
    }


def choose_condition(options: SynthCorpusOptions, utt_id: str) -> Condition:
    """The seeded recording condition of one utterance (uniform over the enabled conditions)."""
    kinds = options.conditions
    if len(kinds) == 1:
        return Condition()
    rng = random.Random(f"synth-condition:{options.seed}:{utt_id}")
    kind = rng.choice(kinds)
    if kind == "noisy":
        return Condition(
            kind="noisy",
            snr_db=round(rng.uniform(*options.noise_snr_db), 2),
            noise_color=rng.choice(sorted(NOISE_COLORS)),
        )
    if kind == "reverb":
        return Condition(
            kind="reverb",
            reverberance=round(rng.uniform(*options.reverb), 1),
            room_scale=round(rng.uniform(40.0, 100.0), 1),
        )
    return Condition()


def plan_corpus(
    corpus_dir: Path, options: SynthCorpusOptions, speakers: List[SpeakerVoice], pool: Sequence[str]
) -> List[PlannedUtterance]:
    """Every utterance of the corpus, in Kaldi order within each split."""
    sentences = split_sentences(pool, options)
    plan = []
    for split in SPLITS:
        chapter = CHAPTERS[split]
        for k, speaker in enumerate(speakers):
            spk = speaker.speaker_id
            folder = corpus_dir / TREE_NAME / split / spk / chapter
            for i, text in enumerate(sentences[split][k]):
                utt_id = f"{spk}-{chapter}-{i:04d}"
                plan.append(
                    PlannedUtterance(
                        utt_id=utt_id,
                        split=split,
                        speaker_index=k,
                        text=text,
                        condition=choose_condition(options, utt_id),
                        audio_path=folder / f"{utt_id}.flac",
                    )
                )
    return plan


def _render_job(args: Tuple[SpeakerVoice, int, List[PlannedUtterance]]) -> int:
    """Render the missing utterances of one job (one speaker); returns how many it rendered."""
    speaker, seed, utts = args
    todo = [u for u in utts if not u.audio_path.is_file()]
    if not todo:
        return 0
    wavs = synthesize_batch(speaker, [u.text for u in todo])
    effects = speaker.sox_effects()
    for utt, wav in zip(todo, wavs):
        render_utterance(
            wav, effects, utt.condition, seed_from("synth-noise", seed, utt.utt_id), utt.audio_path,
            what=f"utterance {utt.utt_id}",
        )
    return len(todo)


def _make_jobs(plan: List[PlannedUtterance], speakers: List[SpeakerVoice], seed: int):
    jobs = []
    by_speaker: Dict[Tuple[str, int], List[PlannedUtterance]] = {}
    for u in plan:
        by_speaker.setdefault((u.split, u.speaker_index), []).append(u)
    for (_, k), utts in by_speaker.items():
        for start in range(0, len(utts), JOB_SIZE):
            jobs.append((speakers[k], seed, utts[start:start + JOB_SIZE]))
    # Slow festival jobs first, so they do not end up alone at the tail of a parallel run.
    jobs.sort(key=lambda j: j[0].base.engine != "festival")
    return jobs


def render_all(
    plan: List[PlannedUtterance], speakers: List[SpeakerVoice], seed: int, nj: int, progress: bool
) -> int:
    """Render every planned utterance that has no audio yet, on `nj` processes."""
    missing = [u for u in plan if not u.audio_path.is_file()]
    if not missing:
        return 0
    jobs = _make_jobs(missing, speakers, seed)
    rendered = 0
    with tqdm(total=len(missing), unit="utt", desc="synthesizing", disable=not progress) as bar:
        if nj <= 1:
            for job in jobs:
                n = _render_job(job)
                rendered += n
                bar.update(n)
        else:
            # "spawn", not "fork": the caller may hold threads (torch, logging) whose locks a
            # forked child could inherit locked; workers need only this light module.
            with multiprocessing.get_context("spawn").Pool(nj) as pool:
                for n in pool.imap_unordered(_render_job, jobs):
                    rendered += n
                    bar.update(n)
    return rendered


def _speakers_txt(speakers: List[SpeakerVoice], minutes: Dict[Tuple[str, str], float]) -> str:
    lines = [
        "; Synthetic speakers: Debian TTS base voice + pitch (p), rate (r), vocal-tract factor (vtl)",
        "; and EQ preset. One line per speaker and subset, as in LibriSpeech's SPEAKERS.TXT.",
        ";ID  |SEX| SUBSET           |MINUTES| NAME",
    ]
    for split in SPLITS:
        for s in speakers:
            lines.append(
                f"{s.speaker_id:<5}| {s.gender.upper()} | {split:<17}| {minutes[(s.speaker_id, split)]:5.2f} "
                f"| {s.describe()}"
            )
    return "\n".join(lines) + "\n"


def write_outputs(
    corpus_dir: Path,
    data_dir: Path,
    plan: List[PlannedUtterance],
    speakers: List[SpeakerVoice],
    digest: str,
) -> Tuple[Dict[str, int], Dict[str, float]]:
    """Write transcripts, SPEAKERS.TXT and the Kaldi dirs; returns (utterances, seconds) per split."""
    durations = {u.utt_id: soundfile.info(str(u.audio_path)).frames / SAMPLE_RATE for u in plan}
    tree = corpus_dir / TREE_NAME
    minutes: Dict[Tuple[str, str], float] = {}
    trans: Dict[Path, List[str]] = {}
    for u in plan:
        spk = speakers[u.speaker_index].speaker_id
        key = (spk, u.split)
        minutes[key] = minutes.get(key, 0.0) + durations[u.utt_id] / 60.0
        trans.setdefault(u.audio_path.parent / f"{spk}-{CHAPTERS[u.split]}.trans.txt", []).append(
            f"{u.utt_id} {u.text}\n"
        )
    for path, lines in trans.items():
        write_text_atomic(path, "".join(sorted(lines, key=lambda l: kaldi_sort_key(l.split()[0]))))
    write_text_atomic(tree / "SPEAKERS.TXT", _speakers_txt(speakers, minutes))
    write_text_atomic(
        tree / "speakers.json", json.dumps([s.to_dict() for s in speakers], indent=1) + "\n"
    )

    counts, seconds = {}, {}
    for split in SPLITS:
        utts = [u for u in plan if u.split == split]
        out = data_dir / split
        write_data_dir(
            out,
            (
                Utterance(
                    utt_id=u.utt_id,
                    audio=str(u.audio_path),
                    text=u.text,
                    speaker=speakers[u.speaker_index].speaker_id,
                    fields={
                        # frames / 16000 has at most 7 decimals: written exactly.
                        "dur": f"{durations[u.utt_id]:.7f}".rstrip("0").rstrip("."),
                        "voice": speakers[u.speaker_index].base.key,
                        "condition": u.condition.kind,
                    },
                )
                for u in utts
            ),
            spk_fields={
                "gender": {s.speaker_id: s.gender for s in speakers},
                "voice": {s.speaker_id: s.describe() for s in speakers},
            },
        )
        write_text_atomic(out / DATA_DIR_MARKER, digest + "\n")
        counts[split] = len(utts)
        seconds[split] = sum(durations[u.utt_id] for u in utts)
    return counts, seconds


def _check_existing(corpus_dir: Path, data_dir: Path, record: dict, digest: str) -> None:
    """Refuse to mix corpora: the folder must be new or hold a build of the same options."""
    options_file = corpus_dir / OPTIONS_FILE
    if options_file.is_file():
        old = json.loads(options_file.read_text())
        if old.get("options_hash") != digest:
            diffs = [
                f"{k}={old['options'].get(k)!r} there, {v!r} now"
                for k, v in record["options"].items()
                if old.get("options", {}).get(k) != v
            ] or ["the sentence pool or the corpus format version differs"]
            raise CorpusOptionsError(
                f"{corpus_dir} already holds a synthetic corpus built with other options "
                f"({'; '.join(diffs)}); use another output folder, or delete {corpus_dir} to rebuild"
            )
    elif (corpus_dir / TREE_NAME).exists():
        raise CorpusOptionsError(
            f"{corpus_dir / TREE_NAME} exists but {options_file} does not, so its content is unknown; "
            f"use another output folder, or delete {corpus_dir / TREE_NAME}"
        )
    for split in SPLITS:
        out = data_dir / split
        marker = out / DATA_DIR_MARKER
        if marker.is_file() and marker.read_text().strip() != digest:
            raise CorpusOptionsError(
                f"{out} holds the Kaldi files of a synthetic corpus built with other options "
                f"(hash {marker.read_text().strip()}, now {digest}); use another data dir, or delete {out}"
            )
        if not marker.is_file() and out.is_dir() and any(out.iterdir()):
            raise CorpusOptionsError(
                f"{out} exists and is not empty, but was not written by this corpus builder; "
                f"use another data dir, or delete {out}"
            )


def build_synth_corpus(
    out_dir: PathLike,
    data_dir: Optional[PathLike] = None,
    num_speakers: int = 12,
    train_per_speaker: int = 100,
    dev_per_speaker: int = 10,
    test_per_speaker: int = 10,
    seed: int = 1,
    noise_snr_db: Union[None, float, Sequence[float]] = None,
    reverb: Union[None, bool, float, Sequence[float]] = False,
    nj: int = 2,
    progress: bool = True,
    wordnet_dir: Optional[PathLike] = None,
) -> SynthCorpusSummary:
    """Synthesize (or resume, or confirm) the multi-speaker corpus.

    Args:
        out_dir: Corpus folder: LibriSpeech-like audio tree and metadata.
        data_dir: Parent of the Kaldi dirs train/dev/test (default `<out_dir>/data`).
        num_speakers: Synthetic speakers (see `espnet_ext.corpora.voices.make_speakers`).
        train_per_speaker: Training utterances per speaker.
        dev_per_speaker: Development utterances per speaker.
        test_per_speaker: Test utterances per speaker.
        seed: Seeds speakers, sentences and conditions; same seed => byte-identical corpus.
        noise_snr_db: Enables a "noisy" condition: SNR in dB, fixed (x) or drawn from (min, max).
        reverb: Enables a "reverb" condition: True (reverberance 20..60 %), x or (min, max) %.
        nj: Parallel rendering processes.
        progress: Show a tqdm progress bar.
        wordnet_dir: WordNet data folder (default /usr/share/wordnet).

    Returns:
        A `SynthCorpusSummary`.

    Raises:
        CorpusOptionsError: The folders hold a corpus built with other options.
        SentenceSourceError, TTSError: WordNet or a TTS engine is missing.
    """
    t0 = time.time()
    options = SynthCorpusOptions(
        num_speakers=num_speakers,
        train_per_speaker=train_per_speaker,
        dev_per_speaker=dev_per_speaker,
        test_per_speaker=test_per_speaker,
        seed=seed,
        noise_snr_db=_as_range(noise_snr_db, None),
        reverb=_as_range(reverb, DEFAULT_REVERBERANCE),
    )
    corpus_dir = Path(out_dir).resolve()
    data_dir = Path(data_dir).resolve() if data_dir is not None else corpus_dir / "data"
    pool = load_wordnet_sentences(wordnet_dir, options.min_words, options.max_words)
    pool_sha1 = sentences_digest(pool)
    digest = options_hash(options, pool_sha1)
    speakers = make_speakers(options.num_speakers, options.seed)
    record = {
        "options": dataclasses.asdict(options),
        "options_hash": digest,
        "format_version": FORMAT_VERSION,
        "sentence_pool_sha1": pool_sha1,
        "sentence_pool_size": len(pool),
    }
    record["options"] = json.loads(json.dumps(record["options"]))  # tuples -> lists, as read back
    _check_existing(corpus_dir, data_dir, record, digest)

    plan = plan_corpus(corpus_dir, options, speakers, pool)
    complete = corpus_dir / COMPLETE_MARKER
    data_done = all((data_dir / s / DATA_DIR_MARKER).is_file() for s in SPLITS)
    # A finished build is a no-op only while all its audio is still there (a stat per file).
    audio_done = all(u.audio_path.is_file() for u in plan)
    if complete.is_file() and complete.read_text().strip() == digest and data_done and audio_done:
        logger.info("%s: already built (options hash %s); nothing to do", corpus_dir, digest)
        counts = {s: sum(1 for u in plan if u.split == s) for s in SPLITS}
        seconds = {
            s: sum(float(line.split()[1]) for line in (data_dir / s / "utt2dur").read_text().splitlines())
            for s in SPLITS
        }
        return SynthCorpusSummary(corpus_dir, data_dir, len(speakers), counts, seconds, 0, digest)

    check_tools(sorted({s.base.engine for s in speakers}))
    corpus_dir.mkdir(parents=True, exist_ok=True)
    if not (corpus_dir / OPTIONS_FILE).is_file():
        record["speakers"] = [s.to_dict() for s in speakers]
        record["tools"] = engine_versions()
        write_text_atomic(corpus_dir / OPTIONS_FILE, json.dumps(record, indent=1) + "\n")
    rendered = render_all(plan, speakers, options.seed, nj, progress)
    counts, seconds = write_outputs(corpus_dir, data_dir, plan, speakers, digest)
    write_text_atomic(complete, digest + "\n")
    summary = SynthCorpusSummary(corpus_dir, data_dir, len(speakers), counts, seconds, rendered, digest)
    logger.info(
        "%s: %d speakers, %s utterances, %.2f h of audio (%d rendered now) in %.1f s",
        corpus_dir, len(speakers), "/".join(str(counts[s]) for s in SPLITS), summary.hours,
        rendered, time.time() - t0,
    )
    return summary
