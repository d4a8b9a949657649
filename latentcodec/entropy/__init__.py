"""Entropy coding shared by GLC-image, GLC-video, DLF and PerCoV2 (SYSTEMS.md 1.2, 1.3, 1.5, 8).

* :class:`EntropyEncoder` / :class:`EntropyDecoder`: one range-coded stream (constriction, 24-bit
  precision) in which Gaussian residuals (per-scale-index integer tables with an escape), learned
  categoricals (``Categorical(perfect=False)``) and uniform symbols interleave in call order.
* :class:`ScaleTable`: the log-spaced sigma table and a device-independent sigma -> index map.
* :func:`pack_indices` / :func:`unpack_indices` / :func:`packed_size`: fixed-length codebook indices.
* :func:`gaussian_residual_bits`: GLC's differentiable rate estimate.
"""

from latentcodec.entropy.bitpack import pack_indices, packed_size, unpack_indices
from latentcodec.entropy.coder import MAX_CATEGORIES, EntropyDecoder, EntropyEncoder
from latentcodec.entropy.estimate import gaussian_residual_bits
from latentcodec.entropy.gaussian import gaussian_code_bits, gaussian_tables
from latentcodec.entropy.scale_table import DEFAULT_SCALE_TABLE, ScaleTable

__all__ = [
    "DEFAULT_SCALE_TABLE",
    "MAX_CATEGORIES",
    "EntropyDecoder",
    "EntropyEncoder",
    "ScaleTable",
    "gaussian_code_bits",
    "gaussian_residual_bits",
    "gaussian_tables",
    "pack_indices",
    "packed_size",
    "unpack_indices",
]
