"""Model compression for the reference MLP: pruning, low rank, quantization, measured.

Issue 14: which compression to apply, and how much, is a hyperparameter search
against accuracy, size and latency. This package does the compression with
torch's own tools and measures the result as shipped; the trainer drives it.

    settings.py  CompressionSettings (torch-free; validated by the settings schema)
    pruning.py   prune_global, make_permanent, PruneSchedule (once / gradual)
    lowrank.py   low_rank: truncated-SVD factorization of the hidden layers
    quantize.py  fold_batchnorm, quantize (none / int8 / fp16 / bf16), Shipped
    encoding.py  compact sparse / int8 encoding; model_bytes by serialization
    metrics.py   nonzero_params, flops, measure_latency, measure
    pipeline.py  compress: low rank -> prune -> fine-tune -> quantize, with a report
"""

from workers.compression.encoding import decode, encode, model_bytes
from workers.compression.lowrank import low_rank, max_rank
from workers.compression.metrics import (
    Latency,
    ModelMetrics,
    flops,
    measure,
    measure_latency,
    nonzero_params,
)
from workers.compression.pipeline import CompressionReport, Evaluate, Finetune, compress
from workers.compression.pruning import PruneSchedule, make_permanent, prune_global, sparsity
from workers.compression.quantize import Shipped, fold_batchnorm, quantize
from workers.compression.settings import (
    FIELDS,
    CompressionSettings,
    CompressionSettingsError,
)

__all__ = [
    "FIELDS",
    "CompressionReport",
    "CompressionSettings",
    "CompressionSettingsError",
    "Evaluate",
    "Finetune",
    "Latency",
    "ModelMetrics",
    "PruneSchedule",
    "Shipped",
    "compress",
    "decode",
    "encode",
    "flops",
    "fold_batchnorm",
    "low_rank",
    "make_permanent",
    "max_rank",
    "measure",
    "measure_latency",
    "model_bytes",
    "nonzero_params",
    "prune_global",
    "quantize",
    "sparsity",
]
