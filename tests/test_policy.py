import json

import pytest

from mpqbench.cost import layer_costs
from mpqbench.errors import MpqbenchError
from mpqbench.models import build_model
from mpqbench.quant.policy import Policy, load_policy
from mpqbench.search import uniform_bits

NAMES = [layer.name for layer in layer_costs(build_model("resnet20", 10), (3, 32, 32))]


def _policy():
    bits = uniform_bits([type("L", (), {"name": n})() for n in NAMES], 4, 8,
                        {"conv1": (8, 8), "linear": (8, 8)})
    return Policy.from_bits(bits, "uniform", bit_candidates=[4], fixed=["conv1", "linear"])


def test_round_trip(tmp_path):
    policy = _policy()
    loaded = load_policy(policy.save(tmp_path / "p.json"), NAMES)
    assert loaded == policy
    assert loaded.bits()["layer2.0.conv1"] == (4, 8) and loaded.bits()["conv1"] == (8, 8)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["layers"].update({"layer9.conv": {"w_bits": 4, "a_bits": 8}}),
     "layer 'layer9.conv' is not a quantizable layer"),
    (lambda d: d["layers"]["layer1.0.conv1"].update(w_bits=0),
     "layer 'layer1.0.conv1' has w_bits = 0; w_bits must be an integer in 2..32"),
    (lambda d: d["layers"]["layer1.0.conv1"].update(w_bits=1),
     r"w_bits = 1; w_bits must be an integer in 2..32 \(a signed weight grid needs a sign bit"),
    (lambda d: d["layers"]["layer1.0.conv1"].update(w_bits=16),
     r"layer 'layer1.0.conv1' has w_bits = 16, outside the policy's bit_candidates \[4\]"),
    (lambda d: d["layers"]["layer1.0.conv1"].update(a_bits=1),  # activations now searched
     r"layer 'layer1.0.conv1' has a_bits = 1, outside the policy's bit_candidates \[4\]"),
    (lambda d: d["layers"]["layer1.0.conv2"].update(a_bits=33), "a_bits = 33"),
    (lambda d: d["layers"]["layer1.0.conv2"].update(a_bits=4.5), "a_bits = 4.5"),
    (lambda d: d["layers"].pop("linear"), r"no bits for layers \['linear'\]"),
    (lambda d: d.update(schema_version=7), "schema_version 7"),
])
def test_bad_policies_are_refused_with_the_layer_named(tmp_path, edit, message):
    data = _policy().to_dict()
    edit(data)
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(MpqbenchError, match=message):
        load_policy(tmp_path / "p.json", NAMES)


def test_an_image_fed_layer_keeps_8_bit_inputs_in_a_searched_policy():
    """LIMPQ gives a layer fed by the image no activation rows, so without fixed first and last
    layers (the ImageNet suite) its input stays at 8 bits while the others are searched: not a
    width outside the candidates. Any other width outside them still is."""
    from mpqbench.quant.policy import check_bits

    layers = {"features.0.0": {"w_bits": 4, "a_bits": 8},
              "features.1.conv": {"w_bits": 3, "a_bits": 2},
              "classifier": {"w_bits": 5, "a_bits": 6}}
    check_bits(layers, "policy", [2, 3, 4, 5, 6], [])
    layers["features.1.conv"]["a_bits"] = 1
    with pytest.raises(MpqbenchError, match="'features.1.conv' has a_bits = 1, outside"):
        check_bits(layers, "policy", [2, 3, 4, 5, 6], [])
