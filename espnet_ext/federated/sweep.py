"""A sweep of federated runs over dropout rates, targeted by one layer-reset scan, in one table.

Layout under the sweep's output dir (what the recipe's stage 8 and its RESULTS read)::

    r<rate>/<plan>/seed<N>/   one run per plan and seed (``r<rate>/<plan>/`` without seeds)
    r<rate>/results.md        that rate's table (:func:`espnet_ext.federated.simulation.run_plans`)
    r<rate>/.done             ``seeds 1,2,3`` (``seeds 0`` without seeds): the rate is complete
    results.md                one row per plan and rate, paired intervals
    cer_vs_client_size.png    error rate vs client model size

* **No dropout runs once.** Its runs do not depend on the rate, so ``none`` runs in the first
  rate's dir only; the other plans (``uniform`` at matched cost, ``targeted``, and ``frozen``
  when asked for: ambient groups frozen up to the targeted plan's cost) run per rate.
* **Uniform dropout follows the scan's scoring.** A greedy-CTC scan scores the encoder only, so
  the uniform plan drops units from the encoder too and the comparison is about which encoder
  units are dropped, not about the decoder; a beam-search scan scores both stacks. The scoring
  is read from the scan's own record (``scan.json``), not from the options of a later call.
* **Resumable.** A rate whose ``.done`` names the same seeds is skipped; any other rate runs, and
  its finished runs resume as :func:`run_plans` resumes them. A new seed list re-runs the rates.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from espnet_ext.federated.options import OptionsError

logger = logging.getLogger(__name__)

# Plans a sweep runs unless told otherwise (``frozen``, the not-trained baseline, on request).
SWEEP_PLANS = ("none", "uniform", "targeted")
# Plans whose runs are the same at every rate: they run in the first rate's dir only (a frozen
# plan is matched to the targeted plan of its rate, so it runs per rate).
RATE_INDEPENDENT_PLANS = ("none",)
# Stacks the uniform plan drops from, by the scan's scoring (`layer_scan --scoring`).
UNIFORM_STACKS: Dict[str, Tuple[str, ...]] = {"ctc_greedy": ("encoder",), "beam": ("encoder", "decoder")}
DONE_FILE = ".done"
RESULTS_FILE = "results.md"
PLOT_FILE = "cer_vs_client_size.png"


def uniform_stacks_for(scoring: Optional[str], scan_path: Union[str, Path] = "the scan") -> Tuple[str, ...]:
    """Stacks the uniform plan drops from for a scan scored with `scoring`.

    Raises:
        OptionsError: Unknown scoring (e.g. a scan without ``scan.json``): give the stacks.
    """
    if scoring not in UNIFORM_STACKS:
        raise OptionsError(
            f"{scan_path}: the scan's scoring is {scoring or 'not recorded'} (known: "
            f"{', '.join(UNIFORM_STACKS)}), so the uniform plan's stacks cannot be derived; give "
            "them (--uniform_stacks encoder or encoder,decoder)")
    return UNIFORM_STACKS[scoring]


def rate_name(rate: float) -> str:
    """The rate as its dir names it: the shortest text that reads back as the rate (0.5, 0.25)."""
    short = f"{rate:g}"
    return short if float(short) == rate else repr(float(rate))


def rate_dir(out_dir: Union[str, Path], rate: float) -> Path:
    """``<out_dir>/r<rate>``: the runs of one rate."""
    return Path(out_dir) / f"r{rate_name(rate)}"


def rate_plans(rates: Sequence[float], plans: Sequence[str]) -> List[Tuple[float, List[str]]]:
    """(rate, plans run at that rate) in rate order: rate-independent plans at the first only."""
    return [(rate, [p for p in plans if i == 0 or p not in RATE_INDEPENDENT_PLANS])
            for i, rate in enumerate(rates)]


def done_record(seeds: Optional[Sequence[int]]) -> str:
    """What ``r<rate>/.done`` holds: ``seeds 1,2,3``, or ``seeds 0`` for one run per plan."""
    return f"seeds {','.join(str(s) for s in seeds) if seeds else 0}"


def is_rate_done(directory: Union[str, Path], seeds: Optional[Sequence[int]]) -> bool:
    """True when the rate dir was completed with these seeds."""
    done = Path(directory) / DONE_FILE
    return done.is_file() and done.read_text(encoding="utf-8").strip() == done_record(seeds)


def locate_scan(exp_dir: Union[str, Path], scan_dir: Optional[Union[str, Path]] = None,
                granularity: Optional[str] = None, dataset: Optional[str] = None) -> Path:
    """The scan dir: `scan_dir` as given, or the run's scan at `granularity` on `dataset`
    (:func:`espnet_ext.scan.result.scan_dir`).

    Raises:
        OptionsError: Neither or both ways given, or a granularity without the dataset.
    """
    from espnet_ext.scan.result import scan_dir as run_scan_dir

    if (scan_dir is None) == (granularity is None):
        raise OptionsError("give the scan as --scan_dir DIR or as --scan_granularity G with --scan_dataset D")
    if scan_dir is not None:
        return Path(scan_dir)
    if not dataset:
        raise OptionsError(f"--scan_granularity {granularity} needs --scan_dataset: the data dir name the "
                           "scan is named after (scan_<granularity>_<dataset>)")
    return run_scan_dir(exp_dir, granularity, dataset)


def run_sweep(exp_dir: Union[str, Path], model_file: str, adapt_data: Union[str, Path],
              eval_data: Sequence[Tuple[str, Path]], scan_dir: Union[str, Path], rates: Sequence[float],
              out_dir: Union[str, Path], plans: Sequence[str] = SWEEP_PLANS,
              seeds: Optional[Sequence[int]] = None, uniform_stacks: Optional[Sequence[str]] = None,
              bootstrap_resamples: int = 2000, **options) -> str:
    """Run the plans at every rate (skipping completed rates) and write the sweep's table and plot.

    Args:
        exp_dir, model_file, adapt_data, eval_data: The pre-trained model and the data, as
            :func:`espnet_ext.federated.simulation.run_plans` takes them.
        scan_dir: The layer-reset scan targeting the dropout (its ``scan.tsv`` and ``scan.json``).
        rates: Dropout rates (0-1), one client model size each, in run order.
        out_dir: The sweep's dir (layout in the module doc).
        plans: Plan kinds; rate-independent ones (``none``) run at the first rate only.
        seeds: Federated seeds (runs in ``seed<N>/``), or None for one run per plan at seed 0.
        uniform_stacks: Stacks of the uniform plan; None derives them from the scan's scoring.
        bootstrap_resamples: Resamples of each paired bootstrap interval.
        options: Further options of :func:`run_plans` (rounds, clients_per_round, local, ...).

    Returns:
        The sweep's markdown table (also in ``<out_dir>/results.md``).

    Raises:
        OptionsError: No rates, a rate twice, underivable stacks; as run_plans.
        ScanResultError: The scan cannot be read.
        NoUpdateError: A run merged no client update (after its rate's table was written; the
            rate is then not marked complete).
    """
    from espnet_ext.federated.results import write_comparison
    from espnet_ext.federated.simulation import run_dirs_of, run_plans
    from espnet_ext.scan.result import ScanResult

    rates = [float(r) for r in rates]
    if not rates:
        raise OptionsError("no rate to run: give at least one, e.g. --rates 0.25,0.5")
    if len({rate_name(r) for r in rates}) != len(rates):
        raise OptionsError(f"each rate once, got {[rate_name(r) for r in rates]}")
    seeds = list(seeds) if seeds is not None else None
    scan = ScanResult.load(scan_dir)
    stacks = tuple(uniform_stacks) if uniform_stacks else uniform_stacks_for(scan.scoring, scan.path)
    if scan.status not in (None, "done"):
        logger.warning(f"{scan.path}: the scan has not finished (status {scan.status}); its rows so far "
                       "target the dropout")
    logger.info(f"Targeting with the {scan.granularity or 'unknown-granularity'} scan {scan.path} "
                f"({scan.scoring or 'unrecorded'} scoring): uniform dropout on {' and '.join(stacks)} blocks")
    seed_options = {"seeds": seeds} if seeds is not None else {}
    seed_text = done_record(seeds)[len("seeds "):]
    rows: List[Union[Path, List[Path]]] = []
    for rate, kinds in rate_plans(rates, plans):
        directory = rate_dir(out_dir, rate)
        groups = run_dirs_of(directory, kinds, seeds)
        rows += [directory / kind for kind in kinds] if seeds is None else groups
        if is_rate_done(directory, seeds):
            logger.info(f"Skip: {directory} is complete (seeds {seed_text})")
            continue
        logger.info(f"Federated runs [{','.join(kinds)}] x seeds [{seed_text}] at rate {rate_name(rate)} "
                    f"from {Path(exp_dir) / model_file} -> {directory}")
        run_plans(exp_dir, model_file, adapt_data, eval_data, directory, kinds, rate=rate,
                  scan_tsv=scan.tsv_path, uniform_stacks=stacks, bootstrap_resamples=bootstrap_resamples,
                  **seed_options, **options)
        (directory / DONE_FILE).write_text(done_record(seeds) + "\n", encoding="utf-8")
    out_dir = Path(out_dir)
    table = write_comparison(rows, out_dir / RESULTS_FILE, plot=out_dir / PLOT_FILE,
                             resamples=bootstrap_resamples)
    logger.info(f"Federated results: {out_dir / RESULTS_FILE}")
    return table
