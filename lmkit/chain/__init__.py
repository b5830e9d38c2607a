"""The machinery that runs the notebook chain: the papermill runner and the ``lmkit`` command
(``pipeline``), the run folder and its lock (``runfolder``), what a stage ran and read and when
it may be reused (``reads``, ``reuse``), the stages (``stages``), the report (``report``,
``narrative``, ``protocol``), multi-process launch (``launch``, ``distributed``) and the ablation
(``ablation``). A student never needs to open it: the study is in the notebooks, and its
helpers are the modules of ``lmkit`` itself."""
from .session import open_run, project_root  # noqa: F401 (how every notebook starts)
