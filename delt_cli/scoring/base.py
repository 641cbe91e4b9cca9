"""The scorer contract: options declared once, an optional fit, a pure transform.

A scorer is a subclass of `Scorer` with

* ``name`` (the ``--method``), ``title`` (its --help panel) and ``Options``, a dataclass
  of its flags (`delt_cli.scoring.options`);
* ``fit(dataset, dist) -> Fitted``: the global work, once per run or once with `delt fit`
  (an OT solve, n-gram models, an LQS annotation). The default fit records only the
  references the transform needs (a model and its fingerprint); scorers whose fit reads
  the whole input set ``global_fit = True``;
* ``prepare(dist)``: per-process set-up from ``self.fitted`` (load the model);
* ``transform(table) -> {column: array}``: one shard in, score columns out, a pure
  function of the shard and the fitted state, so any shard can be scored on any machine
  and agree with every other;
* ``summary()`` (counters summed over processes), ``report()`` (facts of the fit for the
  manifest) and ``provenance()`` (options and fit facts, into the manifest and every shard).

The runner (`delt_cli.scoring.runner`) owns the fitted state: it saves it as an artifact
directory (`delt_cli.scoring.artifact`), reuses it on ``--resume`` and refits on
``--overwrite``. Adding a scorer is one module plus one line in `registry.SCORERS`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import pyarrow as pa

from delt_cli.scoring.options import TextInput, to_dict


@dataclass
class Fitted:
    """The state a fit produces (saved losslessly by `delt_cli.scoring.artifact`).

    `facts`: deterministic JSON facts the transform and the provenance use (fingerprints,
    epsilon, ...); `report`: what the fit measured for people (timings, a domain-relevance
    table), kept out of the shards' metadata; `arrays` and `tables`: the fitted data.
    """

    facts: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, pa.Table] = field(default_factory=dict)
    report: dict = field(default_factory=dict)


class Scorer:
    name: ClassVar[str]
    title: ClassVar[str]
    Options: ClassVar[type]
    global_fit: ClassVar[bool] = False

    def __init__(self, options: Any = None, /, **kwargs):
        if options is None:
            options = self.Options(**kwargs)
        elif kwargs:
            options = dataclasses.replace(options, **kwargs)
        self.options = options
        self.fitted: Optional[Fitted] = None
        self.on_progress: Optional[Callable[[int, int], None]] = None  # (documents, tokens) inside a shard
        self.validate()

    # -- declared per scorer ------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        raise NotImplementedError

    def validate(self) -> None:
        """Check the option values (one-line errors naming the flag); nothing is read yet."""

    def check(self, dataset) -> None:
        """Check that `dataset` has what this scorer reads, before anything is written."""
        if isinstance(self.options, TextInput):
            dataset.require(self.options.text_column, flag="--text-column")

    def fit(self, dataset, dist) -> Fitted:
        """Global work on the whole input (every process calls it; the default records references only)."""
        return Fitted(facts=self.references())

    def references(self) -> dict:
        """Models or files the transform reads, with their fingerprints (checked when a fit is reused)."""
        return {}

    def prepare(self, dist) -> None:
        """Per-process set-up from `self.fitted` (load a model); the default needs none."""

    def transform(self, table: pa.Table) -> dict[str, pa.Array]:
        raise NotImplementedError

    def summary(self) -> dict:
        return {}

    def report(self) -> dict:
        return dict(self.fitted.report) if self.fitted is not None else {}

    def provenance(self) -> dict:
        return {**self.describe(), **(self.fitted.facts if self.fitted is not None else {})}

    def describe(self) -> dict:
        """What the options say about the scores (the manifest's `scorer` block, before the fit facts)."""
        return {}

    # -- conveniences -------------------------------------------------------------------------
    def options_dict(self) -> dict:
        return to_dict(self.options)

    def fit_prepare(self, dataset, dist) -> "Scorer":
        """check + fit + prepare in this process (for library use and tests); returns self."""
        self.check(dataset)
        if self.fitted is None:
            self.fitted = self.fit(dataset, dist)
        self.prepare(dist)
        return self
