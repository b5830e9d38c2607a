"""Faces on disk to faces in memory: the readers of each layout (``readers``), the built-in
synthetic faces (``synthetic``), cropping and the prepared caches (``prepare``), and a run's
training, validation and test faces (``faces``). Imports ``lmkit.run`` and ``lmkit.study``."""
