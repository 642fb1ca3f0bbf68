"""Population training: K trials of one model trained at once, vectorized over stacked weights.

A loss search trains the same architecture again and again; only the loss differs between trials. Here the
members' weights are stacked along a new leading axis of size K and the user's model is mapped over them
(`model.stateless_call` under `tf.vectorized_map` on TensorFlow, `jax.vmap` on JAX): one traced step, one
batched matmul per layer instead of K small ones, one pass over the data. It is never K models side by side
in one multi-output model, which is several times slower (benchmarks/README.md has the figures).

Every member stays a real trial:

* its own compiled `keras.Model` (loss, metrics, optimizer config); after training it holds the member's
  final weights, and at each epoch end its current weights and step count, for ordinary Keras callbacks.
  The population's stacked state, not the model's own optimizer and metric objects, trains and scores it:
  those are left unbuilt (building K of them is a measurable share of a search: benchmarks/README.md), so
  a member's checkpoint holds its weights and a zero step count (tuner.SaveBestAtTrainEnd): what
  KerasTuner's `load_model` restores from any trial's checkpoint;
* its own loss and metrics. Members whose losses differ only in numbers (focal with different gammas,
  cross-entropy with different class weights) form a group whose loss is mapped over a vector of those
  numbers; each group is traced once per population, whatever its size. A loss that branches in Python on
  one of its numbers cannot take a tensor there: its members are computed one after the other inside the
  same traced step. Either way there is one trace per population, not one per trial;
* gradients that never mix: the population's total loss is the sum of the members' losses and a member's
  weights reach only its own loss;
* its own optimizer state: one optimizer over the stacked variables equals K separate optimizers for
  optimizers whose update is elementwise (SGD, Adam, RMSprop, ...; see `vectorizable`);
* the same initial weights, data order, dropout masks and BatchNormalization statistics as a solo
  `model.fit` with that seed (`Stream` draws the batches through the epoch iterator `fit` uses, once for
  all members, from arrays, a tf.data.Dataset, a PyDataset or a generator; non-trainable variables,
  moving statistics and seed-generator states, are stacked and updated per member). Members may have
  different seeds (repeats as members): the input is then drawn once per seed (`SeededStreams`) and each
  member is fed its own seed's batch. Results agree with
  solo training up to float rounding (a batched matmul may round differently from a single one);
  tests/test_population.py holds weights after two epochs to 1e-5;
* its own failure: a member whose loss or gradients become non-finite is frozen from that batch on (its
  update is masked, not its gradient: Adam moves weights even with a zero gradient); the others go on.

    members = [Member(build_and_compile(loss)) for loss in losses]   # same builder, same seed
    train_population(members, x, y, validation_data=(xv, yv), epochs=5, batch_size=32, seed=0)
    members[0].history["val_macro_f1"]

Modules, lowest first: `member` (Member), `sizing` (population="auto"), `stream` (the input's batches),
`converters` (TensorFlow converters for Conv2D, Conv3D, Bitcast), `forward` (the mapped forward pass),
`groups` (members whose losses share one computation), `eligibility` (can members share one computation?
the architecture key), `engine` (the backend-free engine), `engine_tf` and `engine_jax` (one per backend),
`driver` (`train_population` and its epoch loop), `trials` (a HyperModel's trials trained as populations, or
one by one when they cannot be).
"""

from __future__ import annotations

from losstune.population.driver import train_population
from losstune.population.eligibility import NotVectorizable, architecture_key, vectorizable
from losstune.population.member import Member
from losstune.population.stream import Stream
from losstune.population.sizing import AUTO_MAX, BYTES_PER_PARAMETER, auto_size, free_memory_bytes, member_bytes
from losstune.population.trials import executions_together, fit_alone, train_members

__all__ = [
    "AUTO_MAX", "BYTES_PER_PARAMETER", "Member", "NotVectorizable", "Stream", "architecture_key", "auto_size",
    "executions_together", "fit_alone", "free_memory_bytes", "member_bytes", "train_members", "train_population",
    "vectorizable",
]
