"""One module per model family; importing this package registers them in the catalogue.

The import order is the book's order of models.
"""

from . import (
    alexnet_lrm,  # noqa: F401  (AlexNet, LRM3, LRA3)
    b_bl,  # noqa: F401  (B, BL)
    convrnn,  # noqa: F401  (ConvRNN)
    cornet_rt,  # noqa: F401  (CORnet-RT)
)
