"""The experiment harness used by ``examples/`` and ``benchmarks/``, not the library API: command
lines (:mod:`~mp_contrastive.experiments.cli`), the published hyper-parameters
(:mod:`~mp_contrastive.experiments.presets`), what the graph and the image scripts share
(:mod:`~mp_contrastive.experiments.graphs`: a resumable result store, mean +- std;
:mod:`~mp_contrastive.experiments.vision`: presets, splits, the final evaluation) and the
oversmoothing study (:mod:`~mp_contrastive.experiments.oversmoothing`).

Nothing here is imported by the library's own modules; import the submodules by name.
"""
