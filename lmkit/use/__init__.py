"""Using a trained model: the model file written after training (``packaging``), the face
detector and its box calibration (``detector``), the ``Landmarker`` API and ``lmkit predict``
(``inference``), drawing on photos (``drawing``), the exports (``export``) and the dlib peer
(``peers``). Each reads the self-describing model file, never the params. Imports the floors
below it (``run``, ``study``, ``data``, ``train``), never the report or the chain."""
