"""The study: what notebooks 01-05 teach, as the library beneath their cells. The landmark
schemes (``schemes``), the network and its heads (``model``), the losses (``losses``), the
augmentation (``augment``), the metrics (``metrics``), saliency (``saliency``), what a model
file says of its network (``modelinfo``) and notebook 03's study cells read from outside their
kernel (``cells``). A student who wants to go deeper opens this folder first. Imports only
``lmkit.run``."""
