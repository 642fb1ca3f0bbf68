"""Why a trial failed, in one line, and when failures should stop a search.

A failed trial's whole traceback is kept in its folder (layout.traceback_file); the terminal, the status line,
the table and TensorBoard get the one line `failure_reason` finds in it.
"""

from __future__ import annotations

import re

from losstune import layout

REPEATED_FAILURES = 2  # the first trials failing with one same reason stop the search


class RepeatedFailure(RuntimeError):
    """The first trials of a search failed for one same reason; the search stopped instead of repeating it."""


def check_repeated_failure(ended, project_dir):
    """Raise `RepeatedFailure` when the trials that ended so far (`ended`, in end order, each with `status`,
    `message` and `trial_id`) are at least REPEATED_FAILURES, none completed, all with one same reason: the
    rest would fail the same way."""
    if len(ended) < REPEATED_FAILURES or any(t.status == layout.COMPLETED for t in ended):
        return
    reasons = {failure_reason(t.message) for t in ended}
    if len(reasons) == 1:
        raise RepeatedFailure(
            f"the first {len(ended)} trials all failed with the same error, so the search stopped: "
            f"{reasons.pop()} (traceback: {layout.traceback_file(project_dir, ended[0].trial_id)})"
        )


def error_line(err):
    """The one line that says why an exception happened."""
    return failure_reason(f"{type(err).__name__}: {err}")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Keras wraps errors raised inside a layer's call: a header line, the real error, then an argument listing.
_KERAS_CALL_HEADER = re.compile(r"^Exception encountered when calling .*\.$")
_KERAS_ARGUMENTS = re.compile(r"^Arguments received by ")


def failure_reason(message):
    """The one line that says why a trial failed, from KerasTuner's stored traceback (or a plain message).

    The exception text follows the last stack frame; its class name is dropped, and for Keras's wrapped call
    errors the header ("Exception encountered when calling ...") and the argument listing are skipped, so
    what is left is the line that says what is incompatible.
    """
    lines = _ANSI.sub("", message or "").strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if frames:
        start = frames[-1] + 1
        while start < len(lines) and lines[start].startswith("    "):
            start += 1  # the frame's source line and its ^^^ markers
        lines = lines[start:]
    text = []
    for line in lines:
        if _KERAS_ARGUMENTS.match(line):
            break
        text.append(line.strip())
    if text:
        head, sep, tail = text[0].partition(": ")
        if sep and head.replace(".", "").replace("_", "").isalnum():
            text[0] = tail  # "ValueError: ..." -> "..."
    text = [line for line in text if line and not _KERAS_CALL_HEADER.match(line)]
    return text[0] if text else ""
