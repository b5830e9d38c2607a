"""The report: testing a trained model (``evaluation``), the figures (``figures``), the
paragraphs that read a step's numbers (``narrative``), the protocol beside the study's
(``protocol``), the test-face explorer of notebook 05 (``explorer``), the HTML pages
(``page``) and the results page (``results``). Imports every floor below it, never
``lmkit.chain``."""
