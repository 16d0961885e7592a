"""Run a federated simulation: prepare the run directory, choose the plan, launch a backend.

Backends run the same Flower apps (the ``ServerApp`` body :func:`espnet_ext.federated.server.run_server`
and the ``ClientApp`` of :func:`espnet_ext.federated.client.make_client_app`):

* ``ray``: Flower's simulation runtime (``flwr.simulation.run_simulation``): one virtual node
  per client (speaker), client updates in a pool of Ray worker processes
  (``num_workers`` x ``client_threads`` CPUs, ``client_gpus`` of a GPU each). Ray's temporary
  files go to ``<out_dir>/ray`` (or a short path, see :func:`ray_temp_dir`). For more than one
  machine, start a Ray cluster (``ray start --head`` / ``ray start --address=...``) and pass
  ``ray_address``: the same apps then run on the cluster.
* ``local``: the same apps in this process, clients one after another (no Ray); for tests,
  debugging and single-GPU runs. :func:`run_plans` with ``parallel_runs`` N > 1 runs N such runs
  at once, each in a worker process of its own with ``client_threads`` torch threads (no Ray
  start-up per run; the workers pay ESPnet's import once, for all the runs they do).
* ``flwr``: the same apps started by Flower's ``flwr run`` on a SuperLink (its simulation runtime
  or SuperNodes): :func:`prepare_plans` prepares the runs and
  :mod:`espnet_ext.federated.setup_file` writes the setup file the apps read.

Typical use (what ``python -m espnet_ext.bin.fl_simulate run`` does)::

    setup = prepare_run(exp_dir, "valid.acc.best.pth", adapt_data, eval_data, out_dir,
                        plan_kind="targeted", rate=0.5, scan_tsv=scan_dir / "scan.tsv", ...)
    results = run_federated(setup)
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from espnet_ext.federated.options import FederatedSetup, OptionsError, check_same_run
from espnet_ext.federated.plan import (
    PLAN_KINDS,
    DropoutPlan,
    ModelInfo,
    matched_frozen_plan,
    matched_uniform_plan,
    no_dropout_plan,
    read_scan_importance,
    targeted_plan,
    uniform_plan,
)
from espnet_ext.federated.units import UNIT_KINDS
from espnet_ext.utils.atomic import atomic_output, write_json_atomic

logger = logging.getLogger(__name__)
RUN_FILE = "run.json"
# Ray puts unix sockets under its temp dir; their paths must stay under the 107-byte limit.
_MAX_RAY_TEMP_LEN = 48


def make_plan(kind: str, info: ModelInfo, rate: float = 0.0, scan_tsv: Optional[Path] = None,
              scan_dataset: Optional[str] = None, target_mode: str = "label",
              match_plan: Optional[DropoutPlan] = None, match_metric: str = "params",
              unit_kinds: Sequence[str] = UNIT_KINDS, group_norm_policy: str = "auto",
              plan_file: Optional[Path] = None,
              uniform_stacks: Sequence[str] = ("encoder", "decoder")) -> DropoutPlan:
    """Build and validate a dropout plan.

    Args:
        kind: ``none``, ``uniform``, ``targeted``, ``frozen`` or ``file``.
        info: The model.
        rate: Dropout rate (uniform: every block; targeted: ambient groups / the largest).
        scan_tsv: ``targeted``: the layer-reset scan's scan.tsv.
        scan_dataset: ``targeted``: which dataset's scan rows (default: the first).
        target_mode: ``label`` or ``scaled``.
        match_plan: ``uniform``: match this plan's client cost instead of using `rate`;
            ``frozen``: the plan to match (default: the targeted plan at `rate`).
        match_metric: ``params`` or ``bytes`` for matching.
        unit_kinds: Unit kinds that may be dropped.
        group_norm_policy: ``auto``, ``whole_groups`` or ``per_group``.
        plan_file: ``file``: a plan JSON (:meth:`DropoutPlan.write`).
        uniform_stacks: ``uniform``: drop from the blocks of these stacks.

    Raises:
        PlanError / OptionsError: Invalid plan or options.
    """
    if kind == "none":
        plan = no_dropout_plan()
    elif kind == "uniform":
        plan = (matched_uniform_plan(info, match_plan, match_metric, stacks=uniform_stacks)
                if match_plan is not None
                else uniform_plan(info, rate, unit_kinds, group_norm_policy, uniform_stacks))
    elif kind == "targeted":
        if scan_tsv is None:
            raise OptionsError("a targeted plan needs the layer-reset scan result (--scan_tsv)")
        importance, source = read_scan_importance(scan_tsv, scan_dataset)
        plan = targeted_plan(info, importance, rate, target_mode, unit_kinds, group_norm_policy, source)
    elif kind == "frozen":
        if scan_tsv is None:
            raise OptionsError("a frozen plan needs the layer-reset scan result (--scan_tsv)")
        importance, source = read_scan_importance(scan_tsv, scan_dataset)
        reference = match_plan or targeted_plan(info, importance, rate, target_mode, unit_kinds,
                                                group_norm_policy, source)
        plan = matched_frozen_plan(info, importance, reference, match_metric, source)
    elif kind == "file":
        if plan_file is None:
            raise OptionsError("plan kind 'file' needs --plan_file")
        plan = DropoutPlan.read(plan_file)
    else:
        raise OptionsError(f"unknown plan {kind!r}; choose one of {', '.join(PLAN_KINDS + ('file',))}")
    plan.validate(info)
    return plan


def prepare_run(exp_dir: Path, model_file: str, adapt_data: Path,
                eval_data: Sequence[Tuple[str, Path]], out_dir: Path, plan: DropoutPlan,
                *, check_rates: bool = True, **options) -> FederatedSetup:
    """Create the run directory (config copy with absolute paths, plan) and the setup.

    Args:
        exp_dir: Centrally trained experiment dir.
        model_file: Its model file (relative to exp_dir or a path).
        adapt_data: Adaptation-domain Kaldi data dir (clients = its speakers).
        eval_data: (name, data dir) pairs to score.
        out_dir: Run directory.
        plan: The dropout plan (:func:`make_plan`).
        check_rates: Check the audio's sample rate against the model's (False where the caller
            already checked these data dirs, e.g. :func:`run_plans` once for all its runs).
        **options: Further :class:`FederatedSetup` fields (rounds, clients_per_round, local, ...).

    Raises:
        OptionsError / ModelSetupError / DataDirError: Bad options, model or data.
    """
    from espnet_ext.federated.modelio import resolve_model_file, resolve_train_config

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dirs = [adapt_data] + [d for _, d in eval_data]
    check_data_dirs(data_dirs)
    # Nothing in out_dir is replaced before the options are known to fit the run stored there.
    with atomic_output(out_dir / "config.yaml") as staged:
        resolve_train_config(Path(exp_dir), staged)
        setup = FederatedSetup(
            out_dir=out_dir, config_path=out_dir / "config.yaml",
            model_file=resolve_model_file(Path(exp_dir), model_file),
            adapt_data=Path(adapt_data).resolve(),
            eval_data=tuple((n, Path(p).resolve()) for n, p in eval_data),
            plan=plan, **options)
        if check_rates:  # before any client count check
            check_sample_rates(exp_dir, staged, data_dirs)
        setup.validate()
        _check_clients(setup)
        _check_stored_run(setup)
    plan.write(out_dir / "plan.json")
    return setup


def check_data_dirs(data_dirs: Sequence[Path]) -> None:
    """Stop unless every data dir is a valid Kaldi data dir (any sample rate).

    Raises:
        DataDirError: Names the data dir and what is wrong.
    """
    from espnet_ext.data.validate import validate_data_dir

    for d in data_dirs:
        validate_data_dir(Path(d), expected_rate=None)


def check_sample_rates(exp_dir: Path, config_path: Path, data_dirs: Sequence[Path]) -> None:
    """Stop unless the audio of every data dir is at the sample rate (Hz) of the model that
    `config_path` (the run's copy of `exp_dir`'s config) builds.

    Raises:
        DataDirError: Audio at another rate (naming the data dir, both rates and how to resample).
    """
    from espnet_ext.data.audio import check_sample_rate

    for d in data_dirs:
        check_sample_rate(Path(d), config_path, str(Path(exp_dir) / "config.yaml"))


def model_info(config_path: Path) -> ModelInfo:
    """ModelInfo of the model a config builds (for plans before a run starts)."""
    from espnet_ext.federated.modelio import build_asr_model

    return ModelInfo.from_model(build_asr_model(config_path))


def _check_clients(setup: FederatedSetup) -> int:
    from espnet_ext.federated.partition import ClientSampler, speaker_clients

    clients = speaker_clients(setup.adapt_data, setup.min_utts)
    ClientSampler(len(clients), setup.clients_per_round, setup.seed)  # validates the count
    return len(clients)


def _check_stored_run(setup: FederatedSetup) -> None:
    path = setup.out_dir / RUN_FILE
    stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    check_same_run(stored, setup, path)


def _record_run(setup: FederatedSetup) -> None:
    _check_stored_run(setup)
    path = setup.out_dir / RUN_FILE
    write_json_atomic(path, setup.to_json(), indent=2, sort_keys=True)


def begin_run(setup: FederatedSetup) -> int:
    """Check a run's options and clients and record them in ``<out_dir>/run.json`` (what every
    backend, and the ServerApp under ``flwr run``, does before the first round).

    Returns:
        The number of clients.

    Raises:
        OptionsError: Invalid options, or `out_dir` holds a run with other options.
        PartitionError: More clients per round than clients.
    """
    setup.validate()
    num_clients = _check_clients(setup)
    _record_run(setup)
    return num_clients


def run_federated(setup: FederatedSetup, ray_address: Optional[str] = None) -> dict:
    """Run (or resume, or extend) a federated simulation; returns its results dict.

    Raises:
        OptionsError: Invalid options, or `out_dir` holds a run with other options.
        PartitionError: More clients per round than clients.
    """
    if setup.backend == "flwr":
        raise OptionsError(f"{setup.out_dir}: a run for `flwr run` is started by flwr run with its "
                           "setup file (fl_simulate prepare), not here")
    num_clients = begin_run(setup)
    if setup.backend == "local":
        from espnet_ext.federated.client import make_client_app
        from espnet_ext.federated.server import run_server

        return run_server(LocalGrid(make_client_app(setup), num_clients), setup)
    return _run_ray(setup, num_clients, ray_address)


def ray_temp_dir(out_dir: Path) -> Path:
    """Ray's temp dir for a run: ``<out_dir>/ray``, or for a long `out_dir` a short folder
    under the system temp dir linked from ``<out_dir>/ray`` (Ray's socket paths are limited)."""
    wanted = Path(out_dir) / "ray"
    if len(str(wanted)) <= _MAX_RAY_TEMP_LEN:
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted
    wanted.parent.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha1(str(wanted).encode()).hexdigest()[:10]
    short = Path(tempfile.gettempdir()) / f"ray_fl_{tag}"
    short.mkdir(parents=True, exist_ok=True)
    if not wanted.exists() and not wanted.is_symlink():
        wanted.symlink_to(short, target_is_directory=True)
    return short


def _run_ray(setup: FederatedSetup, num_clients: int, ray_address: Optional[str]) -> dict:
    import ray
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from espnet_ext.federated.client import make_client_app
    from espnet_ext.federated.results import load_results
    from espnet_ext.federated.server import run_server

    server_app = ServerApp()

    @server_app.main()
    def main(grid, context) -> None:
        run_server(grid, setup)

    init_args: Dict[str, object] = {"logging_level": "warning", "log_to_driver": True}
    if ray_address:
        init_args["address"] = ray_address
    else:
        init_args["num_cpus"] = setup.num_workers * setup.client_threads
        init_args["num_gpus"] = 1 if setup.client_gpus > 0 else 0
        init_args["_temp_dir"] = str(ray_temp_dir(setup.out_dir))
    backend_config = {
        "client_resources": {"num_cpus": setup.client_threads, "num_gpus": setup.client_gpus},
        "init_args": init_args,
    }
    if ray.is_initialized():
        ray.shutdown()  # a previous run's Ray instance has other resources and temp dir
    try:
        run_simulation(server_app=server_app, client_app=make_client_app(setup),
                       num_supernodes=num_clients, backend_config=backend_config)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    return load_results(setup.out_dir)


class LocalGrid:
    """A Flower ``Grid`` that runs a ClientApp in this process, one message at a time.

    It implements the two calls the server uses (``get_node_ids``, ``send_and_receive``). Node
    ids are 101..100+n (1 is the server's id in Flower); the i-th node's context has
    ``partition-id`` i. A client's exception becomes an error reply, as in Flower's simulation
    runtime.

    Args:
        client_app: The ClientApp.
        num_nodes: Number of nodes (clients).
    """

    #: send_and_receive takes each message only when it runs that client (the server may hand it
    #: a generator; Flower's own grids get a list).
    STREAMS_MESSAGES = True

    def __init__(self, client_app, num_nodes: int):
        from flwr.app import Context, RecordDict
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.task_identity import TaskIdentity

        # Messages take their run and sender from the process's task identity, which Flower's
        # runtime sets; here this process is the server.
        if TaskIdentity._run_id is None:
            TaskIdentity.run_id = 1
            TaskIdentity.task_id = 1
            TaskIdentity.node_id = SUPERLINK_NODE_ID
        self.client_app = client_app
        self.contexts = {
            101 + i: Context(run_id=TaskIdentity.run_id, node_id=101 + i,
                           node_config={"partition-id": i, "num-partitions": num_nodes},
                           state=RecordDict(), run_config={})
            for i in range(num_nodes)
        }

    def get_node_ids(self) -> List[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable, *, timeout: Optional[float] = None) -> Iterator:
        """The replies, each made when it is taken: a message is taken from `messages` and its
        client run only when the caller asks for the next reply, so neither the messages nor
        the clients' work pile up ahead of the caller (the server merges replies as they come)."""
        from flwr.app import Error, Message

        for msg in messages:
            context = self.contexts[msg.metadata.dst_node_id]
            try:
                reply = self.client_app(msg, context)
            except Exception as e:  # a crashing client is a failed client, as in the runtime
                logger.exception(f"client on node {msg.metadata.dst_node_id} raised")
                reply = Message(Error(code=2, reason=f"{type(e).__name__}: {e}"), reply_to=msg)
            del msg
            yield reply


class NoUpdateError(RuntimeError):
    """A finished run merged no client update at all: its final model is the pre-trained one."""


def run_dirs_of(out_dir: Path, plans: Sequence[str], seeds: Optional[Sequence[int]]) -> List[List[Path]]:
    """Run directories per plan: ``<out_dir>/<plan>`` (one seed, `seeds` None) or
    ``<out_dir>/<plan>/seed<N>`` for each of `seeds`."""
    out_dir = Path(out_dir)
    if seeds is None:
        return [[out_dir / kind] for kind in plans]
    return [[out_dir / kind / f"seed{s}" for s in seeds] for kind in plans]


def _checked_seeds(plans: Sequence[str], seeds: Optional[Sequence[int]], options: Mapping[str, object],
                   bootstrap_resamples: int) -> Optional[List[int]]:
    """`seeds` as a list (None stays None) once the plan kinds, seeds and resamples are valid.

    Raises:
        OptionsError: No or repeated plan kinds, bad or repeated seeds, ``seed`` and `seeds`
            both given, or too few resamples.
    """
    from espnet_ext.evaluation.bootstrap import MIN_SAMPLES

    if not plans:
        raise OptionsError("no plan to run: give at least one of none, uniform, targeted, frozen, file")
    if len(set(plans)) != len(plans):
        raise OptionsError(f"each plan once, got {list(plans)}")
    if bootstrap_resamples < MIN_SAMPLES:
        raise OptionsError(f"--bootstrap_resamples must be >= {MIN_SAMPLES} for a percentile interval, "
                           f"got {bootstrap_resamples}")
    if seeds is None:
        return None
    seeds = list(seeds)
    if "seed" in options:
        raise OptionsError("give one seed (--seed) or several (--seeds), not both")
    if not seeds:
        raise OptionsError("--seeds is empty: give at least one seed, e.g. --seeds 1,2,3")
    bad = [s for s in seeds if not isinstance(s, int) or s < 0]
    if bad:
        raise OptionsError(f"seeds must be non-negative integers, got {bad[0]!r}")
    if len(set(seeds)) != len(seeds):
        raise OptionsError(f"each seed once, got {seeds}")
    return seeds


def build_plans(kinds: Sequence[str], info: ModelInfo, match_cost: Optional[str] = "params",
                **plan_options) -> Dict[str, DropoutPlan]:
    """The dropout plan of each kind (:func:`make_plan`); with `match_cost` and a scan,
    ``uniform`` matches the ``targeted`` plan's client cost in that metric; ``frozen`` always
    matches it (on ``params`` when `match_cost` is None).

    Args:
        kinds: Plan kinds (``none``, ``uniform``, ``targeted``, ``frozen``, ``file``).
        info: The model.
        match_cost: ``params``, ``bytes`` or None (``uniform`` uses ``rate``).
        **plan_options: :func:`make_plan` arguments shared by every kind.
    """
    plans: Dict[str, DropoutPlan] = {}
    if "uniform" in kinds and match_cost and plan_options.get("scan_tsv") is not None:
        plans["targeted"] = make_plan("targeted", info, **plan_options)
        plans["uniform"] = make_plan("uniform", info, match_plan=plans["targeted"],
                                     match_metric=match_cost, **plan_options)
    for kind in kinds:
        if kind not in plans:
            # The frozen plan always matches the targeted plan's cost (params without match_cost).
            matching = ({"match_metric": match_cost or "params", "match_plan": plans.get("targeted")}
                        if kind == "frozen" else {})
            plans[kind] = make_plan(kind, info, **matching, **plan_options)
    return {kind: plans[kind] for kind in kinds}


def _no_update_error(idle: Sequence[Tuple[FederatedSetup, dict]], table_path: Path) -> NoUpdateError:
    """The error for runs that merged no client update (the first one named)."""
    setup, results = idle[0]
    return NoUpdateError(
        f"{len(idle)} run(s) merged no client update: {setup.out_dir} had no client update in any "
        f"of its {results['rounds']} rounds ({results['cost']['failures']} client updates failed); "
        "global model unchanged. Recorded in its results.json (rounds_with_updates: 0) and in "
        f"{table_path}; lower --failure_prob or see the reasons in its costs.tsv")


def prepare_plans(exp_dir: Path, model_file: str, adapt_data: Path,
                  eval_data: Sequence[Tuple[str, Path]], out_dir: Path, plans: Sequence[str],
                  rate: float = 0.0, scan_tsv: Optional[Path] = None, scan_dataset: Optional[str] = None,
                  target_mode: str = "label", match_cost: Optional[str] = "params",
                  unit_kinds: Sequence[str] = UNIT_KINDS, group_norm_policy: str = "auto",
                  plan_file: Optional[Path] = None, uniform_stacks: Sequence[str] = ("encoder", "decoder"),
                  seeds: Optional[Sequence[int]] = None, bootstrap_resamples: int = 2000,
                  parallel_runs: int = 1,
                  **options) -> Tuple[List[FederatedSetup], List[List[Path]], ModelInfo]:
    """Prepare every run directory of :func:`run_plans` (each plan and seed), checked against
    what it holds, before any run starts (`parallel_runs` is checked against the backend here).

    Returns:
        (the setups in run order, the run directories per plan as :func:`run_dirs_of`, the model).

    Raises:
        OptionsError / PlanError: Bad plans, seeds or options.
    """
    from espnet_ext.federated.modelio import resolve_train_config

    seeds = _checked_seeds(plans, seeds, options, bootstrap_resamples)
    _check_parallel_runs(parallel_runs, options.get("backend", "ray"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = resolve_train_config(Path(exp_dir), out_dir / "config.yaml")
    info = model_info(config_path)
    built = build_plans(plans, info, match_cost, rate=rate, scan_tsv=scan_tsv, scan_dataset=scan_dataset,
                        target_mode=target_mode, unit_kinds=unit_kinds, group_norm_policy=group_norm_policy,
                        plan_file=plan_file, uniform_stacks=uniform_stacks)
    groups = run_dirs_of(out_dir, plans, seeds)
    # The data dirs are the same for every run: their audio is read for its rate once.
    data_dirs = [adapt_data] + [d for _, d in eval_data]
    check_data_dirs(data_dirs)
    check_sample_rates(exp_dir, config_path, data_dirs)
    # Every run directory is prepared (and checked against what it holds) before any runs.
    setups = []
    for k in range(len(seeds) if seeds is not None else 1):
        for kind, dirs in zip(plans, groups):
            extra = {"seed": seeds[k]} if seeds is not None else {}
            setups.append(prepare_run(exp_dir, model_file, adapt_data, eval_data, dirs[k], built[kind],
                                      check_rates=False, **options, **extra))
    return setups, groups, info


def run_plans(exp_dir: Path, model_file: str, adapt_data: Path,
              eval_data: Sequence[Tuple[str, Path]], out_dir: Path, plans: Sequence[str],
              rate: float = 0.0, scan_tsv: Optional[Path] = None, scan_dataset: Optional[str] = None,
              target_mode: str = "label", match_cost: Optional[str] = "params",
              unit_kinds: Sequence[str] = UNIT_KINDS, group_norm_policy: str = "auto",
              plan_file: Optional[Path] = None, uniform_stacks: Sequence[str] = ("encoder", "decoder"),
              ray_address: Optional[str] = None, seeds: Optional[Sequence[int]] = None,
              bootstrap_resamples: int = 2000, parallel_runs: int = 1, **options) -> str:
    """Run one simulation per plan (and seed) and compare them.

    With `match_cost` (``params`` or ``bytes``) and a scan, the ``uniform`` plan is the uniform
    rate whose client cost matches the ``targeted`` plan's (Cheng et al.: compare at equal
    cost); without it, ``uniform`` uses `rate` on every block.

    One seed (`seeds` None, ``seed`` in `options`, default 0): runs go to ``<out_dir>/<plan>``.
    Several seeds: ``<out_dir>/<plan>/seed<N>``, run seed by seed (every plan at the first seed,
    then the next seed), each resumable on its own; the table gives each plan's mean and spread
    over the seeds and paired bootstrap intervals of targeted minus uniform and minus no dropout
    (:func:`espnet_ext.federated.results.write_comparison`). The seed drives client sampling,
    sub-model draws, local training order and injected failures; the plans themselves do not
    depend on it.

    Args:
        plans: Plan kinds in run order, e.g. ``["none", "uniform", "targeted"]``.
        seeds: Federated seeds (non-negative, distinct), or None for one run per plan.
        bootstrap_resamples: Resamples of each paired bootstrap interval.
        parallel_runs: Runs at once, each in a worker process (backend ``local`` only; the
            results of a run do not depend on it).
        Others: As :func:`make_plan` and :func:`prepare_run`.

    Returns:
        The comparison table (also written to ``<out_dir>/results.md``).

    Raises:
        OptionsError / PlanError: Bad plans, seeds or options (checked for every plan and seed
            before the first simulation starts).
        NoUpdateError: After every run finished and the table was written: some run merged no
            client update in any round (e.g. every client failed); the table records it.
    """
    from espnet_ext.federated.results import rounds_with_updates, write_comparison

    setups, groups, info = prepare_plans(
        exp_dir, model_file, adapt_data, eval_data, out_dir, plans, rate=rate, scan_tsv=scan_tsv,
        scan_dataset=scan_dataset, target_mode=target_mode, match_cost=match_cost, unit_kinds=unit_kinds,
        group_norm_policy=group_norm_policy, plan_file=plan_file, uniform_stacks=uniform_stacks,
        seeds=seeds, bootstrap_resamples=bootstrap_resamples, parallel_runs=parallel_runs, **options)
    out_dir = Path(out_dir)
    for setup in setups:
        logger.info(f"plan {setup.plan.name}, seed {setup.seed}: {setup.plan.note}; per client "
                    f"{setup.plan.cost(info)['params_fraction']:.3f} of the parameters")
    if parallel_runs > 1 and len(setups) > 1:
        all_results = run_in_processes(setups, parallel_runs)
    else:
        all_results = [run_federated(setup, ray_address=ray_address) for setup in setups]
    idle = [(setup, results) for setup, results in zip(setups, all_results)
            if rounds_with_updates(results) == 0]
    # Exactly the runs of this call, not other seed<N>/ runs an earlier call left in a plan dir.
    table = write_comparison(groups, out_dir / "results.md", resamples=bootstrap_resamples)
    if idle:
        raise _no_update_error(idle, out_dir / "results.md")
    return table


def _check_parallel_runs(parallel_runs: int, backend: str) -> None:
    """Raise OptionsError unless `parallel_runs` fits the backend (several runs: ``local`` only)."""
    if parallel_runs < 1:
        raise OptionsError(f"parallel runs must be >= 1, got {parallel_runs}")
    if parallel_runs > 1 and backend != "local":
        raise OptionsError(f"--parallel_runs {parallel_runs} needs --backend local (a Ray run uses "
                           "its worker pool for the clients of one run)")


def _init_run_process(threads: int, log_level: int, log_format: Optional[str]) -> None:
    """A run process: its torch threads and the parent's log level and format."""
    import torch

    torch.set_num_threads(max(1, threads))
    logging.basicConfig(level=log_level, format=log_format)


def _run_in_process(setup: FederatedSetup) -> dict:
    return run_federated(setup)


def run_in_processes(setups: Sequence[FederatedSetup], processes: int) -> List[dict]:
    """Run in-process (``local``) simulations, `processes` at a time, each in a worker process
    with ``client_threads`` torch threads; returns their results in the order of `setups`.

    Workers are spawned (not forked: torch's thread pools do not survive a fork) and each does
    several runs, so ESPnet is imported once per worker.
    """
    root = logging.getLogger()
    fmt = next((h.formatter._fmt for h in root.handlers if h.formatter is not None), None)
    threads = max(s.client_threads for s in setups)
    with ProcessPoolExecutor(max_workers=min(processes, len(setups)),
                             mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_run_process,
                             initargs=(threads, root.getEffectiveLevel(), fmt)) as pool:
        return list(pool.map(_run_in_process, setups))
