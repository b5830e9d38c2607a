"""Training: the loop around notebook 03's training step (``loop``), checkpoints
(``checkpoints``), where and how it runs on a device (``devices``), several processes
(``distributed``) and the hyper-parameter search of notebook 02 (``search``). Imports
``lmkit.run``, ``lmkit.study`` and ``lmkit.data``."""
