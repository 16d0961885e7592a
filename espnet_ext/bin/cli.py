"""What the data-preparation entry points share: their log format and their output contract
(one summary line per data dir written, or one ``<prog>: error: ...`` line and exit status 1)."""

from __future__ import annotations

import logging
import sys
from typing import Callable, Iterable, Protocol, Tuple, Type

from espnet_ext.data.kaldi import DataDirError

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"


class Summary(Protocol):
    """Anything with a one-line description (e.g. a data dir's utterance and speaker counts)."""

    def line(self) -> str: ...


def setup_logging(level: int = logging.INFO) -> None:
    """INFO messages on stderr in ESPnet's format."""
    logging.basicConfig(level=level, format=LOG_FORMAT)


def fail(prog: str, message: object) -> int:
    """Prints ``<prog>: error: <message>`` on stderr; returns the exit status 1."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


def print_summaries(prog: str, make: Callable[[], Iterable[Summary]],
                    errors: Tuple[Type[Exception], ...] = (DataDirError,)) -> int:
    """Runs ``make``; prints one line per summary it returns (exit status 0), or the error of one
    of ``errors`` as one line (exit status 1). Other exceptions are bugs and keep their traceback."""
    try:
        summaries = list(make())
    except errors as e:
        return fail(prog, e)
    for s in summaries:
        print(s.line())
    return 0
