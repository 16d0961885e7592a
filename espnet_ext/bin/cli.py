"""What every entry point in espnet_ext.bin shares: its log format (:func:`setup_logging`), the
parsing of list and optional arguments (:func:`csv_list`, :func:`int_list`, ...) and its output
contract: one ``<prog>: error: ...`` line and exit status 1 for bad input (:func:`run_guarded`),
e.g. one summary line per data dir written by the data preparation tools.

Bad input (a data dir, an option, a model config ESPnet cannot build) ends in one line, never a
traceback; set the environment variable ``ESPNET_EXT_DEBUG=1`` to get the full traceback instead.
Exceptions that are not bad input are bugs and always keep their traceback. Options argparse
itself rejects (a missing required option, ``type=`` parsers below) end in argparse's usage
message and its exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Protocol, Tuple, Type, Union

from espnet_ext.data.kaldi import DataDirError

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"
#: Exit status of every entry point for bad input (and for a run that could not do its work).
BAD_INPUT = 1
# Set to 1 (any value but empty or 0) for full tracebacks instead of one-line errors.
DEBUG_ENV = "ESPNET_EXT_DEBUG"
# What ESPnet's model building raises for a bad config: unknown choices and bad values
# (ValueError), unknown or missing options (TypeError), typeguard's type checks on the
# constructors (TypeCheckError, no TypeError subclass) and its asserts (e.g. heads that do not
# divide the attention dimension).
_BUILD_ERROR_NAMES = ("ValueError", "TypeError", "TypeCheckError", "AssertionError")


class Summary(Protocol):
    """Anything with a one-line description (e.g. a data dir's utterance and speaker counts)."""

    def line(self) -> str: ...


def setup_logging(level: Union[int, str] = logging.INFO) -> None:
    """Log messages from `level` on (a number, or a name such as ``"warning"``) on stderr in
    ESPnet's format."""
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, format=LOG_FORMAT)


def fail(prog: str, message: object) -> int:
    """Prints ``<prog>: error: <message>`` on stderr; returns the exit status 1 (BAD_INPUT)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return BAD_INPUT


# ---- argparse ``type=`` parsers ----------------------------------------------------------------


def csv_list(value: str) -> List[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: comma-separated items, blanks dropped."""
    return [v.strip() for v in value.split(",") if v.strip()]


def int_list(value: str) -> List[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``.

    Raises:
        argparse.ArgumentTypeError: An item is not an integer.
    """
    try:
        return [int(v) for v in csv_list(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def float_list(value: str) -> List[float]:
    """``"0.25,0.5"`` -> ``[0.25, 0.5]``.

    Raises:
        argparse.ArgumentTypeError: An item is not a number.
    """
    try:
        return [float(v) for v in csv_list(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None


def boolean(value: str) -> bool:
    """``true``/``1``/``yes`` or ``false``/``0``/``no`` (any case).

    Raises:
        argparse.ArgumentTypeError: Anything else.
    """
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _is_none(value: str) -> bool:
    return value.lower() in ("none", "off", "")


def str_or_none(value: str) -> Optional[str]:
    """``none``, ``off`` or empty -> None; anything else as given."""
    return None if _is_none(value) else value


def float_or_none(value: str) -> Optional[float]:
    """``none``, ``off`` or empty -> None; else a float (ValueError: argparse's own message)."""
    return None if _is_none(value) else float(value)


def debug_enabled() -> bool:
    """True when ``ESPNET_EXT_DEBUG`` asks for full tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def _is_build_error(exc: BaseException) -> bool:
    return any(c.__name__ in _BUILD_ERROR_NAMES for c in type(exc).__mro__)


def _config_named_in(frame_locals: dict) -> Optional[str]:
    for name in ("config_file", "config_path"):
        value = frame_locals.get(name)
        if isinstance(value, (str, Path)) and str(value):
            return str(value)
    return None


def model_build_error(exc: BaseException) -> Optional[str]:
    """The one-line message for an error raised while ESPnet built a model from a config.

    ESPnet reports a bad config (``encoder: foo``, a bad ``conv_norm_type``, groups that do not
    divide the channels, an unknown option) as a plain ValueError/TypeError from deep inside
    ``AbsTask.build_model``; only the call stack tells such an error from one raised later. So
    the traceback is searched for a ``build_model`` frame of an ESPnet task, and for the config
    file being built: ``build_model_from_file``'s ``config_file`` (a trained model's
    config.yaml), a ``config_path`` of the project's own loaders, else the ``--config`` of
    training (``args.config``).

    Returns:
        ``<config>: cannot build the model from this config: <message>``, or None when `exc` was
        not raised while building a model.
    """
    if not _is_build_error(exc) or "espnet2.tasks.abs_task" not in sys.modules:
        return None
    from espnet2.tasks.abs_task import AbsTask

    config = args_config = None
    inside = False
    tb = exc.__traceback__
    last = None
    while tb is not None:
        frame = tb.tb_frame
        local = frame.f_locals
        named = _config_named_in(local)
        if named and not inside:
            config = named
        args = local.get("args")
        if not inside and isinstance(args, argparse.Namespace) and isinstance(
                getattr(args, "config", None), str):
            args_config = args.config
        cls = local.get("cls")
        if (frame.f_code.co_name == "build_model" and isinstance(cls, type)
                and issubclass(cls, AbsTask)):
            inside = True
        last = tb
        tb = tb.tb_next
    if not inside:
        return None
    message = str(exc).strip()
    if not message:  # a bare assert: say where it failed
        code = last.tb_frame.f_code
        message = f"{type(exc).__name__} in {code.co_name} ({code.co_filename}:{last.tb_lineno})"
    where = config or args_config or "the model config"
    return f"{where}: cannot build the model from this config: {message}"


def run_guarded(prog: str, func: Callable[[], Optional[int]],
                errors: Tuple[Type[BaseException], ...] = ()) -> int:
    """Runs an entry point's work; bad input ends in one line on stderr and exit status 1.

    Args:
        prog: The entry point's name, for ``<prog>: error: ...``.
        func: The work; its return value is the exit status (None: 0).
        errors: Exception types that mean bad input (their message names the fix).
            Errors raised while ESPnet builds a model from a config always count as bad input
            (see :func:`model_build_error`).

    Returns:
        The exit status (bad input: BAD_INPUT). With ``ESPNET_EXT_DEBUG=1`` every error
        propagates with its traceback.
    """
    try:
        status = func()
    except Exception as e:  # noqa: BLE001 - sorted below; anything else is re-raised
        if debug_enabled():
            raise
        message = model_build_error(e)
        if message is not None:
            return fail(prog, f"{message} (set {DEBUG_ENV}=1 for the traceback)")
        if errors and isinstance(e, errors):
            return fail(prog, e)
        raise
    return 0 if status is None else int(status)


def print_summaries(prog: str, make: Callable[[], Iterable[Summary]],
                    errors: Tuple[Type[Exception], ...] = (DataDirError,)) -> int:
    """Runs ``make``; prints one line per summary it returns (exit status 0), or the error of one
    of ``errors`` as one line (exit status 1). Other exceptions are bugs and keep their traceback."""

    def run() -> int:
        for s in list(make()):
            print(s.line())
        return 0

    return run_guarded(prog, run, errors)
