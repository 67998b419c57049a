"""Reading input files with clear errors, and atomic writing of run outputs.

A TOML input that is missing, unreadable or malformed gives one error naming the file;
so does a Parquet table that is missing, damaged (truncated, overwritten) or another
table than the one expected (its columns say which).
An output appears under its name only once it is complete:

every output goes to a hidden temporary name in the destination folder and is renamed
into place (``os.replace``, atomic on one file system) when the writer finishes, so an
interrupted run never leaves a half-written file that looks whole.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "read_table",
    "read_toml",
    "release_arrow_memory",
    "write_json",
    "write_text",
]

_UMASK = os.umask(0)
os.umask(_UMASK)


def read_toml(path: Path, *, error: type[Exception], what: str) -> dict[str, Any]:
    """The table of a TOML file, or `error` naming the file and what went wrong.

    `what` names the kind of file in the message, e.g. ``"sweep file"``.
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such {what} (give the path to a .toml file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: unreadable ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc})") from None


def read_table(
    path: Path,
    *,
    required: Iterable[str],
    error: type[Exception],
    columns: list[str] | None = None,
) -> Any:
    """A Parquet table as a DataFrame, or `error` naming the file and what is wrong.

    Parameters
    ----------
    path
        The Parquet file.
    required
        Columns the table must have; a table without them is another table (e.g. a
        file copied over the wrong name), and the message lists the columns it has.
    error
        The exception class to raise.
    columns
        Read only these columns (default: all).
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise error(f"{path}: missing; the stage that writes it did not run or did not finish")
    damaged = (
        f"{path}: damaged, not a readable Parquet table (truncated or overwritten?); "
        "run the scenario again to rewrite it"
    )
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise error(f"{damaged} ({exc})") from None
    missing = [c for c in dict.fromkeys([*required, *(columns or [])]) if c not in names]
    if missing:
        raise error(
            f"{path}: not the expected table: column(s) {', '.join(missing)} missing (it has "
            f"{', '.join(names) or 'no columns'}); was another file copied over it?"
        )
    try:
        table = pd.read_parquet(path, columns=columns)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise error(f"{damaged} ({exc})") from None
    release_arrow_memory()
    return table


def release_arrow_memory() -> None:
    """Hand back to the system what Arrow's memory pool keeps after a read or a write.

    The pool keeps freed buffers for reuse: after reading a table of tens of millions of
    rows it held as much again as the table itself, which a full run's peak paid for.
    """
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


@contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; rename it to `dest` when the block succeeds.

    Parameters
    ----------
    dest
        Final path of the file. Its folder is created if needed.

    Yields
    ------
    Path
        Where the caller writes. If the block raises, the temporary file is removed
        and `dest` is left as it was (absent, or its previous complete version).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name keeps the suffix, which some writers (GDAL) read as the format
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.stem}.", suffix=f".part{dest.suffix}", dir=dest.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes the file private; give it the usual permissions
            tmp.chmod(0o666 & ~_UMASK)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(text: str, dest: str | os.PathLike[str]) -> Path:
    """Write `text` (UTF-8) to `dest` atomically and return `dest`."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_json(data: Any, dest: str | os.PathLike[str]) -> Path:
    """Write `data` as indented JSON to `dest` atomically and return `dest`."""
    return write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", dest)
