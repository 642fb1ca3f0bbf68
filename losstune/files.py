"""Files a search writes: atomically, so a reader (or a resumed search) never sees half of one."""

from __future__ import annotations

import json
import os
import tempfile


def write_json_atomic(path, data):
    """Write JSON so a reader sees either the old file or the whole new one, never half of it."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_text_atomic(path, text):
    """Write a text file so a reader sees either the old file or the whole new one, never half of it."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path, data):
    """Write a file so a reader sees either the old file or the whole new one, never half of it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_json(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
