import json

import nbformat
import pytest

from mpqbench.errors import MpqbenchError
from mpqbench.notebook import run_notebook

SOURCE = '''# %% tags=["parameters"]
value = 1
runs_dir = "runs"

# %%
import json, pathlib
pathlib.Path(runs_dir).mkdir(parents=True, exist_ok=True)
print("value is", value * 10)
if value < 0:
    raise ValueError("negative value")
'''

RECORD = '''
from mpqbench.results import RunRecord, provenance, save_run
cost = dict(size_mib=1.0, bitops_g=1.0, compression_ratio=1.0, mean_w_bits=32.0, mean_a_bits=32.0)
acc = dict(fp_top1=1.0, top1=1.0, top5=1.0, drop=0.0)
save_run(RunRecord("t", "m", "r", "d", "v", "p", cost=cost, accuracy=acc,
                   provenance=provenance(0, "smoke", "cpu")), runs_dir)
'''


def _write(tmp_path, body):
    path = tmp_path / "toy.py"
    path.write_text(body)
    return path


def test_parameters_are_injected_and_volatile_metadata_stripped(tmp_path):
    source = _write(tmp_path, SOURCE + RECORD)
    out = run_notebook(source, tmp_path / "out", {"value": 7}, runs_dir=tmp_path / "runs",
                       cwd=tmp_path)
    nb = nbformat.read(out, as_version=4)
    text = json.dumps(nb)
    assert "value is 70" in text
    assert "start_time" not in text and "duration" not in text
    assert (tmp_path / "out" / "toy.html").read_text().count("value is 70") >= 1
    assert json.loads((tmp_path / "runs" / "t.json").read_text())["method"] == "m"


def test_a_failing_notebook_is_left_for_reading(tmp_path):
    source = _write(tmp_path, SOURCE + RECORD)
    with pytest.raises(MpqbenchError, match="ValueError: negative value.*toy.ipynb"):
        run_notebook(source, tmp_path / "out", {"value": -1}, runs_dir=tmp_path / "runs",
                     cwd=tmp_path)
    assert "negative value" in (tmp_path / "out" / "toy.ipynb").read_text()


def test_a_notebook_that_writes_no_record_fails(tmp_path):
    source = _write(tmp_path, SOURCE)
    with pytest.raises(MpqbenchError, match="wrote no RunRecord"):
        run_notebook(source, tmp_path / "out", {}, runs_dir=tmp_path / "runs", cwd=tmp_path)


def test_a_source_without_parameters_cell_is_refused(tmp_path):
    source = _write(tmp_path, "# %%\nx = 1\n")
    with pytest.raises(MpqbenchError, match="no cell tagged 'parameters'"):
        run_notebook(source, tmp_path / "out", {})


def test_plots_are_embedded_in_the_rendered_notebook(tmp_path):
    source = _write(tmp_path, SOURCE + RECORD + '''
import matplotlib.pyplot as plt
plt.plot([1, 2], [3, 4])
plt.show()
''')
    out = run_notebook(source, tmp_path / "out", {}, runs_dir=tmp_path / "runs", cwd=tmp_path)
    outputs = [o for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
