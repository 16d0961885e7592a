"""Federated partitions of a Kaldi data dir: clients, per-round client sampling, domain splits.

* **Clients are speakers.** Every speaker of a data dir with at least `min_utts` utterances is
  one client holding exactly that speaker's utterances (as in federated ASR on LibriSpeech or
  TED-LIUM). Clients are numbered in C byte order of their speaker ids, so a client's index is
  stable across runs and machines.
* **Sampling.** Each round draws `clients_per_round` distinct clients uniformly without
  replacement; the draw depends only on (seed, round), so a resumed run samples the same
  clients as an uninterrupted one.
* **Withheld-domain splits** for "central pre-training on domain A, federated adaptation on
  domain B": by an ``utt2<field>`` value (e.g. ``utt2condition`` = noisy), by utterance
  duration (``utt2dur``, e.g. short-form utterances below 2 s, as the source paper withheld
  short-form data), by a speaker list, by every n-th speaker (LibriSpeech's withheld readers),
  or by each speaker's last chapter (``utt2chapter``; the withheld readers' held-out test data).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from espnet_ext.data.kaldi import DataDirError, KaldiDataDir, PathLike, kaldi_sort_key
from espnet_ext.data.outdir import check_replaceable, is_complete, read_record, write_dir
from espnet_ext.utils.atomic import write_text_atomic

SPLIT_METHODS = ("field", "duration", "speakers", "every_nth_speaker", "last_chapter")
SPLIT_TOOL = "fl_simulate split"


class PartitionError(ValueError):
    """A federated partition or split cannot be made as asked."""


@dataclasses.dataclass(frozen=True)
class Client:
    """One federated client: a speaker and its utterances.

    Attributes:
        index: Position in the client list (0-based, C byte order of speaker ids).
        speaker: Speaker id.
        utterances: The speaker's utterance ids (C byte order).
    """

    index: int
    speaker: str
    utterances: Tuple[str, ...]

    @property
    def num_examples(self) -> int:
        """Number of utterances (FedAvg weights a client's update by this)."""
        return len(self.utterances)


def _as_data(data: Union[KaldiDataDir, PathLike]) -> KaldiDataDir:
    return data if isinstance(data, KaldiDataDir) else KaldiDataDir.read(data)


def speaker_clients(data: Union[KaldiDataDir, PathLike], min_utts: int = 1) -> List[Client]:
    """The clients of a data dir: one per speaker with at least `min_utts` utterances.

    Args:
        data: A Kaldi data dir (path or loaded).
        min_utts: Speakers with fewer utterances are left out (LibriSpeech FL partitions use
            e.g. 116).

    Returns:
        Clients in C byte order of speaker ids, indexed 0..n-1.

    Raises:
        PartitionError: min_utts < 1, or no speaker has enough utterances.
    """
    if min_utts < 1:
        raise PartitionError(f"min_utts must be >= 1, got {min_utts}")
    d = _as_data(data)
    spk2utt = d.spk2utt
    kept = [s for s in spk2utt if len(spk2utt[s]) >= min_utts]
    if not kept:
        most = max((len(u) for u in spk2utt.values()), default=0)
        raise PartitionError(
            f"no speaker has >= {min_utts} utterances (the most is {most}, among "
            f"{len(spk2utt)} speakers); lower min_utts"
        )
    return [Client(i, s, tuple(spk2utt[s])) for i, s in enumerate(kept)]


class ClientSampler:
    """Seeded per-round sampling of distinct clients.

    Args:
        num_clients: Size of the client population.
        clients_per_round: Clients drawn each round (without replacement).
        seed: Base seed; round r's draw depends only on (seed, r).

    Raises:
        PartitionError: clients_per_round < 1 or larger than the population.
    """

    def __init__(self, num_clients: int, clients_per_round: int, seed: int = 0):
        if clients_per_round < 1:
            raise PartitionError(f"clients per round must be >= 1, got {clients_per_round}")
        if clients_per_round > num_clients:
            raise PartitionError(
                f"{clients_per_round} clients per round but only {num_clients} clients "
                f"(speakers) exist; use at most {num_clients} clients per round, or lower the "
                "minimum utterances per client"
            )
        self.num_clients = num_clients
        self.clients_per_round = clients_per_round
        self.seed = seed

    def sample(self, server_round: int) -> List[int]:
        """Sorted client indices of round `server_round` (1-based, as Flower counts rounds)."""
        rng = np.random.default_rng([self.seed, server_round, 0x5A3])
        picked = rng.choice(self.num_clients, size=self.clients_per_round, replace=False)
        return sorted(int(i) for i in picked)


# --- withheld-domain splits -------------------------------------------------------------------


@dataclasses.dataclass
class DomainSplit:
    """A data dir split into the central-training domain and the withheld (adaptation) domain.

    Attributes:
        central: Utterances for central pre-training (domain A).
        withheld: Utterances withheld for federated adaptation (domain B).
        rule: Human-readable rule, e.g. ``utt2dur < 2.0 s``.
    """

    central: KaldiDataDir
    withheld: KaldiDataDir
    rule: str

    def write(self, out_dir: PathLike, central_name: str = "central",
              withheld_name: str = "withheld", overwrite: bool = False,
              overwrite_hint: Optional[str] = None) -> Tuple[Path, Path]:
        """Write both parts as data dirs ``<out_dir>/<central_name>``, ``<out_dir>/<withheld_name>``
        and the rule as ``<out_dir>/split_rule``.

        Each dir is built aside and moved into place whole (see `espnet_ext.data.outdir`). An
        output that already holds this very split is kept untouched (a re-run is a no-op); a dir
        or ``split_rule`` file the split did not write is never replaced; an earlier split with
        another rule or data is replaced only with `overwrite`, and only when its dirs hold
        nothing but the files written then. Every target is checked before anything is written.

        Args:
            out_dir: Parent of the two dirs (created).
            central_name, withheld_name: Names of the two dirs.
            overwrite: Replace the outputs of an earlier, different split.
            overwrite_hint: How the caller's user asks for `overwrite` (e.g. ``--overwrite``),
                named in the message when it is needed; None: the message says to move the dir.

        Returns:
            (central dir, withheld dir).

        Raises:
            DataDirError: A target exists and may not be replaced; nothing is written then.
        """
        out = Path(out_dir)
        paths = (out / central_name, out / withheld_name)
        parts = ((paths[0], "central", self.central), (paths[1], "withheld", self.withheld))
        options = {p: {"tool": SPLIT_TOOL, "rule": self.rule, "part": kind, "sha256": d.digest()}
                   for p, kind, d in parts}
        pending = [p for p, _, _ in parts if not is_complete(p, options[p])]
        for p in pending:
            check_replaceable(p, SPLIT_TOOL, overwrite=overwrite, overwrite_hint=overwrite_hint)
        rule_file = out / "split_rule"
        rule_text = self.rule + "\n"
        # split_rule carries no marker: it counts as the split's own when both dirs next to it do.
        own_rule = all(read_record(p) is not None and read_record(p).get("tool") == SPLIT_TOOL for p in paths)
        if rule_file.is_symlink() or (rule_file.exists() and not (
                rule_file.is_file() and (rule_file.read_text(encoding="utf-8") == rule_text or own_rule))):
            raise DataDirError(
                f"{rule_file} already exists and was not written by this split; {SPLIT_TOOL} never "
                f"replaces it: move it away (mv {rule_file} {rule_file}.orig) or choose another "
                f"output dir"
            )
        for p, kind, d in parts:
            write_dir(p, d.write, SPLIT_TOOL, options[p], overwrite=overwrite,
                      overwrite_hint=overwrite_hint)
        if not rule_file.is_file() or rule_file.read_text(encoding="utf-8") != rule_text:
            write_text_atomic(rule_file, rule_text)
        return paths


def _durations(d: KaldiDataDir, where: str) -> Dict[str, float]:
    """Utterance durations in seconds from utt2dur, else from segments or the audio headers."""
    if "dur" in d.utt_fields:
        out = {}
        for utt in d.utterances:
            value = d.utt_fields["dur"].get(utt)
            if value is None:
                raise DataDirError(f"{where}/utt2dur: utterance '{utt}' has no duration")
            try:
                out[utt] = float(value)
            except ValueError:
                raise DataDirError(
                    f"{where}/utt2dur: duration of '{utt}' is {value!r}, not a number"
                ) from None
        return out
    if d.segments is not None:
        return {u: s.end - s.start for u, s in d.segments.items() if s.end != -1}
    import soundfile

    out = {}
    for utt in d.utterances:
        path = d.wav_scp[d.recording_of(utt)]
        if path.rstrip().endswith("|"):
            raise DataDirError(
                f"{where}: no utt2dur and wav.scp entry of '{utt}' is a piped command; write "
                "utt2dur (one '<utt> <seconds>' line per utterance)"
            )
        info = soundfile.info(path)
        out[utt] = info.frames / info.samplerate
    return out


def every_nth_speaker(data: Union[KaldiDataDir, PathLike], every: Optional[int],
                      where: str = "data dir") -> List[str]:
    """Speakers number `every`, 2*`every`, ... (1-based) in C byte order of speaker ids: the
    order of ``spk2utt``, so every 5th of LibriSpeech's 251 train-clean-100 readers gives 50.

    Raises:
        PartitionError: `every` is not an integer >= 2, or the data has fewer speakers.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 2:
        raise PartitionError(f"every_nth_speaker needs every >= 2 (an integer), got {every!r}")
    speakers = _as_data(data).speakers
    picked = speakers[every - 1::every]
    if not picked:
        raise PartitionError(f"{where} has {len(speakers)} speaker(s), fewer than every={every}: lower every")
    return picked


def last_chapters(data: Union[KaldiDataDir, PathLike], where: str = "data dir") -> Dict[str, str]:
    """{speaker: chapter of its last utterance in C byte order}, from ``utt2chapter``.

    With LibriSpeech's ``<reader>-<chapter>-<n>`` utterance ids this is each reader's last
    chapter in id order; its utterances are speech that the reader's other chapters (a client's training
    data) do not contain, so they score adaptation on unseen recordings of a seen speaker.

    Raises:
        PartitionError: No ``utt2chapter``, or an utterance without a chapter.
    """
    d = _as_data(data)
    if "chapter" not in d.utt_fields:
        have = ", ".join(f"utt2{f}" for f in sorted(d.utt_fields)) or "none"
        raise PartitionError(f"{where}: no utt2chapter file to split by (metadata files: {have})")
    chapter = d.utt_fields["chapter"]
    last: Dict[str, str] = {}
    for utt in d.utterances:
        if utt not in chapter:
            raise PartitionError(f"{where}/utt2chapter: utterance {utt!r} has no chapter")
        last[d.utt2spk[utt]] = chapter[utt]
    return last


def split_withheld_domain(
    data: Union[KaldiDataDir, PathLike],
    method: str,
    field: str = "condition",
    values: Sequence[str] = (),
    max_duration: Optional[float] = None,
    min_duration: Optional[float] = None,
    speakers: Iterable[str] = (),
    every: Optional[int] = None,
) -> DomainSplit:
    """Split a data dir into a central domain and a withheld domain.

    Args:
        data: The data dir (path or loaded).
        method: ``field`` (withhold utterances whose ``utt2<field>`` value is in `values`),
            ``duration`` (withhold utterances shorter than `max_duration` seconds and/or at
            least `min_duration` seconds long), ``speakers`` (withhold these speakers),
            ``every_nth_speaker`` (withhold every `every`-th speaker: see
            :func:`every_nth_speaker`) or ``last_chapter`` (withhold each speaker's last
            chapter: see :func:`last_chapters`).
        field: Metadata field for ``field``: ``condition`` reads ``utt2condition``.
        values: Withheld values for ``field``.
        max_duration: ``duration``: withhold utterances with duration < this (short-form).
        min_duration: ``duration``: withhold utterances with duration >= this (long-form).
        speakers: Withheld speaker ids for ``speakers``.
        every: ``every_nth_speaker``: withhold speakers every-th, 2*every-th, ... (>= 2).

    Returns:
        The split; both parts non-empty.

    Raises:
        PartitionError: Unknown method, missing/unknown field, value or speaker, or a split
            that leaves one side empty.
    """
    d = _as_data(data)
    where = str(data) if not isinstance(data, KaldiDataDir) else "data dir"
    if method not in SPLIT_METHODS:
        raise PartitionError(f"unknown split method {method!r}; choose one of {', '.join(SPLIT_METHODS)}")
    if method == "field":
        if not values:
            raise PartitionError("split by field needs the withheld values (e.g. noisy)")
        if field not in d.utt_fields:
            have = ", ".join(f"utt2{f}" for f in sorted(d.utt_fields)) or "none"
            raise PartitionError(f"{where}: no utt2{field} file to split by (metadata files: {have})")
        mapping = d.utt_fields[field]
        present = set(mapping.values())
        unknown = [v for v in values if v not in present]
        if unknown:
            raise PartitionError(
                f"{where}/utt2{field}: value {unknown[0]!r} does not occur; values present: "
                f"{', '.join(sorted(present))}"
            )
        wanted = set(values)
        withheld = {u for u in d.utterances if mapping.get(u) in wanted}
        rule = f"utt2{field} in {{{', '.join(sorted(wanted))}}}"
    elif method == "duration":
        if max_duration is None and min_duration is None:
            raise PartitionError("split by duration needs max_duration and/or min_duration (seconds)")
        durs = _durations(d, where)
        withheld = {
            u for u, t in durs.items()
            if (max_duration is None or t < max_duration) and (min_duration is None or t >= min_duration)
        }
        parts = []
        if min_duration is not None:
            parts.append(f"duration >= {min_duration:g} s")
        if max_duration is not None:
            parts.append(f"duration < {max_duration:g} s")
        rule = " and ".join(parts)
    elif method == "every_nth_speaker":
        picked = every_nth_speaker(d, every, where)
        wanted = set(picked)
        withheld = {u for u in d.utterances if d.utt2spk[u] in wanted}
        rule = f"speakers {every}, {2 * every}, ... in C byte order: speaker in {{{', '.join(picked)}}}"
    elif method == "last_chapter":
        chapters = last_chapters(d, where)
        withheld = {u for u in d.utterances if d.utt_fields["chapter"][u] == chapters[d.utt2spk[u]]}
        rule = ("each speaker's last chapter: utt2chapter in "
                f"{{{', '.join(sorted(set(chapters.values()), key=kaldi_sort_key))}}}")
    else:
        wanted_spk = list(speakers)
        if not wanted_spk:
            raise PartitionError("split by speakers needs the withheld speaker ids")
        known = set(d.utt2spk.values())
        unknown = [s for s in wanted_spk if s not in known]
        if unknown:
            raise PartitionError(f"{where}: speaker {unknown[0]!r} is not in utt2spk")
        wanted = set(wanted_spk)
        withheld = {u for u in d.utterances if d.utt2spk[u] in wanted}
        rule = f"speaker in {{{', '.join(sorted(wanted, key=kaldi_sort_key))}}}"
    if not withheld:
        raise PartitionError(f"{where}: no utterance matches the withheld rule ({rule})")
    if len(withheld) == len(d.utt2spk):
        raise PartitionError(
            f"{where}: every utterance matches the withheld rule ({rule}); nothing is left for "
            "central training"
        )
    central = d.subset(predicate=lambda u: u not in withheld)
    held = d.subset(utterances=withheld)
    return DomainSplit(central=central, withheld=held, rule=rule)
