"""Using a trained model: the face detector and its box calibration (``detector``), the
``Landmarker`` API, ``lmkit predict`` and the exports (``inference``), the dlib peer (``peers``)
and the test-face explorer of notebook 05 (``explorer``). Each reads the self-describing model
file, never the params."""
