"""How many members at once: the population size `population="auto"` picks from memory."""

from __future__ import annotations

import os

import keras
import numpy as np

AUTO_MAX = 32  # the largest population measured (benchmarks/population_search.py)
# Measured (benchmarks/population_memory.py, CPU, TensorFlow, batch 32): each member adds about 63 bytes per
# parameter: weights, gradients, Adam's two slots and the vectorized step's intermediate copies.
BYTES_PER_PARAMETER = 64


def member_bytes(model, batch_size):
    """Estimated memory one more member of `model` needs: BYTES_PER_PARAMETER per parameter, plus a batch of
    every layer's output kept for the backward pass and its gradient (float32), where the layers have
    symbolic outputs (a subclassed model counts its parameters only)."""
    activations = 0
    for layer in model.layers:
        try:
            shapes = [tuple(t.shape) for t in keras.tree.flatten(layer.output)]
        except (AttributeError, ValueError):  # a layer never called on symbolic inputs
            continue
        activations += sum(int(np.prod([d or 1 for d in shape[1:]])) for shape in shapes)
    return BYTES_PER_PARAMETER * model.count_params() + 2 * 4 * batch_size * activations


def free_memory_bytes():
    """Free memory where members train, or None where it cannot be read: the accelerator's under JAX (its
    memory statistics), None on a TensorFlow GPU (TensorFlow reports use, not capacity), else the host's
    (Linux `MemAvailable`, else `sysconf`)."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            stats = device.memory_stats() or {}
            if "bytes_limit" in stats:
                return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
            return None
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            return None
    return _host_free_bytes()


def _host_free_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def auto_size(model, batch_size, limit, free_bytes=None, members_per_trial=1):
    """(K, why): the population size (trials at once) for `model` that `population="auto"` picks: at most
    `limit` and AUTO_MAX trials, and no more than fit in half the free memory at `member_bytes` per member
    (`free_bytes`: default `free_memory_bytes()`; unknown free memory bounds nothing), each trial training
    `members_per_trial` members at once (its folds or repeats as members)."""
    per_trial = member_bytes(model, batch_size) * members_per_trial
    free = free_memory_bytes() if free_bytes is None else free_bytes
    size, why = min(limit, AUTO_MAX), f"at most {min(limit, AUTO_MAX)}"
    each = "member" if members_per_trial == 1 else f"trial of {members_per_trial} members"
    megabytes = f"about {per_trial / 2**20:.1f} MB per {each} for {model.count_params():,} parameters"
    if free is None:
        return size, f"{why}; {megabytes}, free memory unknown"
    fits = int(free // 2 // max(per_trial, 1))
    if fits < size:
        size, why = max(fits, 1), f"{fits} fit in half the free memory"
    return size, f"{why}; {megabytes}, {free / 2**20:,.0f} MB free"
