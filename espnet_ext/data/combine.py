"""Combine several Kaldi data dirs into one (e.g. LibriSpeech's dev = dev-clean + dev-other).

Like Kaldi's `utils/combine_data.sh`: utterance and recording ids must be unique across the
sources; a speaker may appear in several sources (its per-speaker metadata must then agree);
metadata files (`utt2<field>`, `spk2<field>`) are kept only when every source has them. The
destination is never a dir the user made: see `combine_data_dirs`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet_ext.data.kaldi import DataDirError, KaldiDataDir, PathLike, Segment
from espnet_ext.data.outdir import write_dir

logger = logging.getLogger(__name__)

TOOL = "combine_data_dirs"


def combine_data_dirs(
    sources: Sequence[PathLike],
    dst: PathLike,
    overwrite: bool = False,
    overwrite_hint: Optional[str] = None,
) -> KaldiDataDir:
    """Write the union of `sources` as the data dir `dst` (files sorted, spk2utt derived).

    `dst` is built aside and moved into place whole (see `espnet_ext.data.outdir`): an existing
    `dst` that already holds this very combination is kept untouched; a dir this function did not
    write is never replaced; an earlier combination with other sources or content is replaced
    only with `overwrite`, and only when it holds nothing but the files written then.

    Args:
        sources: Two or more Kaldi data dirs (one is allowed: a plain copy).
        dst: Output directory; must not be one of the sources.
        overwrite: Replace an earlier combination (other sources or data) in `dst`.
        overwrite_hint: How the caller's user sets `overwrite` (e.g. "--overwrite"), for
            messages; None: the user has no such option.

    Returns:
        The combined data dir (as written, or as kept).

    Raises:
        DataDirError: No source, `dst` is a source, an utterance or recording id occurs in two
            sources, sources mix segments with whole recordings, a speaker's metadata differs
            between sources, or `dst` exists and may not be replaced.
    """
    if not sources:
        raise DataDirError("combine_data_dirs: no source data dirs given")
    dst = Path(dst)
    resolved = {Path(s).resolve() for s in sources}
    if dst.resolve() in resolved:
        raise DataDirError(f"combine_data_dirs: destination {dst} is one of the sources; choose another folder")
    dirs = [(Path(s), KaldiDataDir.read(s)) for s in sources]
    with_segments = [str(p) for p, d in dirs if d.segments is not None]
    if with_segments and len(with_segments) != len(dirs):
        raise DataDirError(
            f"combine_data_dirs: {with_segments[0]} has a segments file but other sources do not; "
            f"combine only dirs of the same kind"
        )

    wav_scp: Dict[str, str] = {}
    text: Dict[str, str] = {}
    utt2spk: Dict[str, str] = {}
    segments: Dict[str, Segment] = {}
    origin_utt: Dict[str, Path] = {}
    origin_rec: Dict[str, Path] = {}
    for path, d in dirs:
        for utt in d.utt2spk:
            if utt in origin_utt:
                raise DataDirError(
                    f"combine_data_dirs: utterance '{utt}' is in both {origin_utt[utt]} and {path}; "
                    f"utterance ids must be unique across the combined dirs (rename one of them)"
                )
            origin_utt[utt] = path
        for rec in d.wav_scp:
            if rec in origin_rec:
                raise DataDirError(
                    f"combine_data_dirs: recording '{rec}' is in both {origin_rec[rec]}/wav.scp and "
                    f"{path}/wav.scp; recording ids must be unique across the combined dirs"
                )
            origin_rec[rec] = path
        wav_scp.update(d.wav_scp)
        text.update(d.text)
        utt2spk.update(d.utt2spk)
        if d.segments is not None:
            segments.update(d.segments)

    utt_fields = _common_fields([d.utt_fields for _, d in dirs], "utt2", [p for p, _ in dirs])
    spk_fields: Dict[str, Dict[str, str]] = {}
    for field in _common_names([d.spk_fields for _, d in dirs], "spk2", [p for p, _ in dirs]):
        merged: Dict[str, str] = {}
        seen_in: Dict[str, Path] = {}
        for path, d in dirs:
            for spk, value in d.spk_fields[field].items():
                if spk in merged and merged[spk] != value:
                    raise DataDirError(
                        f"combine_data_dirs: speaker '{spk}' has spk2{field} '{merged[spk]}' in "
                        f"{seen_in[spk]} but '{value}' in {path}; make them agree"
                    )
                merged[spk] = value
                seen_in.setdefault(spk, path)
        spk_fields[field] = merged

    combined = KaldiDataDir(
        wav_scp=wav_scp,
        text=text,
        utt2spk=utt2spk,
        segments=segments if with_segments else None,
        utt_fields=utt_fields,
        spk_fields=spk_fields,
    )
    options = {"tool": TOOL, "sources": [str(Path(s).resolve()) for s in sources],
               "sha256": combined.digest()}
    if write_dir(dst, combined.write, TOOL, options, overwrite=overwrite, overwrite_hint=overwrite_hint):
        logger.info("%s: combined from %s", dst, ", ".join(str(s) for s in sources))
    else:
        logger.info("%s: already holds this combination of %s; kept", dst, ", ".join(str(s) for s in sources))
    return combined


def _common_names(field_maps: List[Dict[str, dict]], prefix: str, paths: List[Path]) -> List[str]:
    """Field names every source has; the others are named in a log line and dropped."""
    names = set(field_maps[0])
    for m in field_maps[1:]:
        names &= set(m)
    dropped = sorted(set().union(*field_maps) - names)
    if dropped:
        logger.info(
            "combine_data_dirs: dropping %s (not in every source: %s)",
            ", ".join(prefix + f for f in dropped), ", ".join(str(p) for p in paths),
        )
    return sorted(names)


def _common_fields(field_maps: List[Dict[str, Dict[str, str]]], prefix: str, paths: List[Path]):
    names = _common_names(field_maps, prefix, paths)
    return {f: {k: v for m in field_maps for k, v in m[f].items()} for f in names}
