import pandas as pd
import pytest

from mpqbench.cost import Budget, LayerCost, cost_summary, layer_costs
from mpqbench.errors import MpqbenchError
from mpqbench.mixed import interpolated_budget, uniform_at_least
from mpqbench.models import build_model
from mpqbench.naming import budget_label
from mpqbench.quant.policy import default_fixed
from mpqbench.search import search
from mpqbench.sensitivity import SensitivityTable, restrict_table

LAYERS = [LayerCost("a", "conv", 100, 1000), LayerCost("b", "conv", 300, 500),
          LayerCost("c", "linear", 50, 50)]


def test_budget_labels_are_short_and_file_safe():
    assert budget_label(Budget(compression_ratio=10.67)) == "ratio10.67"
    assert budget_label(Budget(size_mib=0.5, bitops_equiv=(4, 4))) == "size0.5MiB_W4A4eq"
    assert budget_label(Budget(bitops_g=1.25)) == "bitops1.25G"


def test_interpolated_budgets_are_hawq_v3s_formula():
    fixed = {"c": (8, 8)}
    # size in bits: all-4 = 4*400 + 8*50 = 2000, all-8 = 3600; r = 0.25 -> 2400 bits
    size = interpolated_budget(LAYERS, fixed, 0.25, "size")
    assert size.size_mib * 8 * 2**20 == pytest.approx(2400)
    # BitOps: all-4 (W4A4) = 16*1500 + 64*50 = 27,200; all-8 = 64*1550 = 99,200; r = 0.5
    bitops = interpolated_budget(LAYERS, fixed, 0.5, "bitops")
    assert bitops.bitops_g * 1e9 == pytest.approx(27200 + 0.5 * (99200 - 27200))
    with pytest.raises(MpqbenchError, match="kind 'latency'"):
        interpolated_budget(LAYERS, fixed, 0.5, "latency")


def test_uniform_at_least_is_the_smallest_uniform_point_not_below_the_budget():
    layers = layer_costs(build_model("resnet20", 10), (3, 32, 32))
    fixed = default_fixed(layers)
    for ratio, expected in ((8, 4), (10.67, 3), (12.8, 3), (4.0, 8)):
        w, a = uniform_at_least(layers, Budget(compression_ratio=ratio), [2, 3, 4, 5, 6, 8], 8,
                                fixed)
        assert (w, a) == (expected, 8)
        bits = {ly.name: fixed.get(ly.name, (w, 8)) for ly in layers}
        assert cost_summary(layers, bits)["compression_ratio"] <= ratio + 1e-9
    assert uniform_at_least(layers, Budget(bitops_g=1.0), [4, 8], 8, fixed) is None


def test_restricted_tables_keep_scores_and_set_activation_bits():
    frame = pd.DataFrame([(n, w, 8, float(w)) for n in "ab" for w in (2, 4, 8)],
                         columns=["layer", "w_bits", "a_bits", "score"])
    table = SensitivityTable(frame, "m", 1.0, 10, 10, 10)
    same = restrict_table(table, [4, 8], a_bits=8)
    assert set(same.frame.w_bits) == {4, 8} and set(same.frame.a_bits) == {8}
    paired = restrict_table(table, [4, 8], a_bits=None)
    assert (paired.frame.a_bits == paired.frame.w_bits).all()
    assert paired.frame.score.tolist() == [4.0, 8.0, 4.0, 8.0] and paired.seconds == 1.0
    # W=A choices under a BitOps budget: the ILP picks per layer between W4A4 and W8A8
    result = search("ilp", paired.frame.assign(score=lambda f: 1 / f.w_bits), LAYERS[:2],
                    interpolated_budget(LAYERS[:2], {}, 0.5, "bitops"))
    assert set(result.bits.values()) <= {(4, 4), (8, 8)}
