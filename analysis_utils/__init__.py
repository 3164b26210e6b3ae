"""analysis_utils: time-resolved category geometry in recurrent vision DNNs.

Module map (one rule per module; a reader should know from here what belongs where):

- ``errors``      the one exception type every bad input raises, with a sentence that says
                  what was expected and how to fix it.
- ``catalogue``   the model registry: one card per model, ``names()``, ``card()``, ``load()``.
- ``models/``     one module per family; each builds its model at ``mini`` or ``full`` scale
                  and returns every time step from ``model.readouts(x)``.
- ``preprocess``  the image transforms named on the cards (PIL image -> tensor).
- ``weights``     official checkpoints (URL, sha256, download, cache) and the mini zoo.
- ``probes``      probe image sets and their category metadata.
- ``tiny_imagenet`` the official Tiny-ImageNet archive: download, size and md5 check, unpack.
- ``perturb``     seeded image perturbations (occlusion, clutter, noise, phase noise) of the
                  probe's uint8 pixels, before each card's preprocessing.
- ``extract``     time-resolved readouts of a model over a probe.
- ``store``       the feature cache on disk.
- ``geometry``    tensors in, numbers out: prototypes, distances, RDMs, the study's metrics.
- ``rsa``         RDMs of tagged features, cross-model RSA, MDS.
- ``stats``       everything that returns a p-value or an interval.
- ``plotting``    figures and the shared style (colours per model and state).
- ``results``     result tables as CSV files with a sidecar of what produced them.
- ``book``        what the chapters call: parameter checks, the "rendered with" header,
                  opening a chapter, the untrained reference.
- ``build``       what ``make book`` calls around the chapters: preflight, prefill of the
                  feature cache, the output and HTML checks (``python -m analysis_utils.build``).
- ``train``       training the mini zoo.
- ``plugins``     a user's own model: the time-resolved adapter (hooks that record every call
                  of a reused module as one step), ``register_model``, the ``plugins``
                  parameter and the ``analysis_utils.models`` entry-point group.
"""

__version__ = "0.1.0"
