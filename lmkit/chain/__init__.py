"""The machinery that runs the notebook chain, which a student never needs to open: the
papermill runner (``pipeline``), the stages and what each may read and report (``stages``),
what a stage ran and read and when it may be reused (``reads``, ``reuse``), the run folder's
lock (``lock``), how a notebook opens its run (``session``), the kernel (``kernel``),
multi-process training (``launch`` starts torchrun, ``distributed`` is what each process runs) and the ablation (``ablation``). The ``lmkit`` command is
``lmkit.cli``. Imports every floor below it."""

from lmkit.chain.session import open_run, project_root  # noqa: F401 (how every notebook starts)
