"""lmkit: rebuild "Facial Landmarks Detection with ResNet18" as a notebook chain.

The notebooks hold the study; this package is the thin helper beneath them, in folders that are
floors, each importing only itself and the floors below it (``tests/test_layout.py``):

    run     a run's params, folder, progress events and digests     (the ground floor)
    study   what the notebooks teach: schemes, network, losses, augmentation, metrics, saliency
    data    readers, synthetic faces, crops and caches, a run's faces
    train   the loop around notebook 03's step, its settings, batches, devices, checkpoints, search
    use     the model file, face detector, Landmarker and lmkit predict, exports, the dlib peer
    report  evaluation, predictions, figures, the notebooks' paragraphs, the report and results pages
    chain   the machinery that runs the notebooks (a student never needs to open it)
    cli     the lmkit command
"""

__version__ = "0.2.0"
