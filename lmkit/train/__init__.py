"""Training: the loop around notebook 03's step, its batches, validation and several processes
(``loop``), the settings and the device plan (``config``), checkpoints (``checkpoints``) and the
hyper-parameter search of notebook 02 (``search``). Imports ``lmkit.run``, ``lmkit.study`` and
``lmkit.data``."""
