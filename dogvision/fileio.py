"""Writing files so that an interrupted run never leaves half a file behind.

Every output of the kit (CSV, model, cache, report, run metadata) goes to a
temporary name in the same folder and is renamed into place, which is atomic
on POSIX file systems.
"""
import contextlib
import json
import os
import tempfile
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, overwrite=True):
    """Yield a temporary path next to `path`; move it onto `path` on success.

    The temporary name ends like `path` (".weights.h5", ".csv"): savers pick the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes[-2:]), dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        if not overwrite and path.exists():
            raise FileExistsError(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path, text, overwrite=True):
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text)


def write_json(path, obj, overwrite=True):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", overwrite)


def read_json(path):
    return json.loads(Path(path).read_text())
