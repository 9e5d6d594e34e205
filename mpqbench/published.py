"""Published headline figures, next to which the report puts what this suite measured.

Facts from the papers (through ``../shared/docs/methods.md``); each entry names the paper's
model, dataset and budget, and how to find the comparable RunRecord here (``match``: equal
fields of the report's run frame). ``fp_top1`` is None where the source gives no FP baseline;
the drop is then unknown and only the absolute figure is listed.
"""

from __future__ import annotations

PUBLISHED: list[dict] = [
    {"method": "first_order_ptq", "source": "Chauhan et al. 2023", "model": "ResNet-18",
     "dataset": "ImageNet", "budget": "8x size (mean 4-bit weights), A8, PTQ",
     "fp_top1": None, "top1": None, "drop": 0.65,
     "match": {"method": "first_order_ptq", "allocator": "first_order", "budget": "ratio8"}},
    {"method": "saq", "source": "Liu, Cai, Zhuang (authors' README)", "model": "ResNet-20",
     "dataset": "CIFAR-100", "budget": "uniform W4A4, QAT-SAQ", "fp_top1": None, "top1": 68.7,
     "drop": None, "match": {"method": "saq", "run_id_suffix": "-W4A4-qat_saq"}},
    {"method": "saq", "source": "Liu, Cai, Zhuang (authors' README)", "model": "ResNet-20",
     "dataset": "CIFAR-100", "budget": "uniform W3A3, QAT-SAQ", "fp_top1": None, "top1": 67.7,
     "drop": None, "match": {"method": "saq", "run_id_suffix": "-W3A3-qat_saq"}},
    {"method": "saq", "source": "Liu, Cai, Zhuang (authors' README)", "model": "ResNet-18",
     "dataset": "ImageNet", "budget": "uniform W2A2, QAT-SAQ", "fp_top1": None, "top1": 67.1,
     "drop": None, "match": {"method": "saq", "run_id_suffix": "-W2A2-qat_saq"}},
    {"method": "limpq", "source": "Tang et al. ECCV 2022", "model": "ResNet-18",
     "dataset": "ImageNet", "budget": "search time of the one-time ILP", "fp_top1": None,
     "top1": None, "drop": None, "search_s": 0.06,
     "match": {"method": "limpq", "solver": "ilp"}},
]
