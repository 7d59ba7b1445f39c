"""The one exit-code rule of every ``framecast`` command, and the errors that mean "bad input".

* 0: success;
* 2: bad input or usage: a config value, a missing, corrupt or too-short video, an unsafe or mismatched
  checkpoint, too few clips for the processes. One message names the file or field and what to do, and no
  traceback is printed (``FRAMECAST_DEBUG=1`` prints it);
* 1: anything else (a bug, or a run that failed on its own, e.g. a non-finite loss).

Raise :class:`InputError` (or a subclass) for bad input anywhere in the package; :func:`run_command` turns
it into the message and exit code 2. Other libraries' errors that are bad input by nature (a missing file
given on the command line) are converted where they are caught, by the code that knows the file or field.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

DEBUG_ENV = "FRAMECAST_DEBUG"
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class InputError(ValueError):
    """Bad input, reported as one clear message naming the file or field (exit code 2)."""


class ConfigError(InputError):
    """A config value (or a combination of them) that cannot work; the message names the field."""


class RunFailed(RuntimeError):
    """A run that stopped on its own with a clear reason (exit code 1, no traceback)."""


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _bad_input_types() -> tuple[type[BaseException], ...]:
    """Exception types that are bad input wherever they come from (imported lazily: they live in modules
    that import torch)."""
    from framecast.checkpoints import UnsafeCheckpointError
    from framecast.data.cache import CacheDirError
    from framecast.data.decode import BadVideoError, VideoDecodeError

    return InputError, BadVideoError, VideoDecodeError, UnsafeCheckpointError, CacheDirError


def bad_input_cause(error: BaseException) -> BaseException | None:
    """``error`` or the first exception in its cause/context chain that is bad input, else ``None``.

    Lightning and jsonargparse wrap the exceptions they catch; the one a person can act on is inside."""
    kinds = _bad_input_types()
    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, kinds):
            return e
        e = e.__cause__ or e.__context__
    return None


def run_command(prog: str, fn: Callable[[], int | None]) -> int:
    """Run ``fn`` under the exit-code rule: its return value (0 if ``None``), 2 with one message for bad input,
    1 with one message for a failed run, 1 with the traceback for anything unexpected."""
    try:
        return int(fn() or 0)
    except SystemExit as e:  # argparse-style exits keep their code (2 for usage errors)
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (the one place every command's errors end)
        from framecast.module import NonFiniteError

        cause = bad_input_cause(e)
        if debug():
            traceback.print_exc()
        if cause is not None:
            print(f"{prog}: error: {cause}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if isinstance(e, (RunFailed, NonFiniteError)):
            print(f"{prog}: {e}", file=sys.stderr)
            return EXIT_FAILURE
        if not debug():
            traceback.print_exc()
        print(f"{prog}: unexpected error (a bug; please report it with the traceback above): "
              f"{type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILURE
