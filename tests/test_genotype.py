import json
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st

from dartsnas.errors import GenotypeError
from dartsnas.genotype import CONV_GENOTYPES, Genotype, derive_cell, derive_genotype, load_genotype
from dartsnas.ops import DARTS_OPS

OPS = DARTS_OPS
I = {name: i for i, name in enumerate(OPS)}


def _weights(rows, n_ops=len(OPS), fill=0.01):
    w = torch.full((len(rows), n_ops), fill)
    for r, entries in enumerate(rows):
        for op, value in entries.items():
            w[r, I[op]] = value
    return w


def test_derivation_keeps_two_strongest_distinct_inputs_with_their_best_non_zero_op():
    # node 2: inputs 0,1 ; node 3: inputs 0,1,2 (two nodes only)
    rows = [
        {"none": 0.9, "sep_conv_3x3": 0.05},            # 0->2: 'none' is ignored
        {"max_pool_3x3": 0.2, "dil_conv_3x3": 0.3},     # 1->2
        {"skip_connect": 0.6},                           # 0->3
        {"sep_conv_5x5": 0.1},                           # 1->3 (weakest)
        {"avg_pool_3x3": 0.4, "none": 0.99},             # 2->3
    ]
    gene = derive_cell(_weights(rows), OPS, num_inputs=2, k=2)
    assert gene == [("dil_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("avg_pool_3x3", 2)]


def test_derivation_ties_prefer_lower_input_then_earlier_op():
    w = torch.full((5, len(OPS)), 0.125)
    gene = derive_cell(w, OPS, num_inputs=2, k=2)
    # every non-zero op ties: the first non-'none' op (max_pool_3x3) on the lowest inputs
    assert gene == [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1)]


def test_recurrent_style_k1_derivation():
    rows = [{"sep_conv_3x3": 0.5}, {"skip_connect": 0.3}, {"dil_conv_5x5": 0.7}]
    assert derive_cell(_weights(rows), OPS, num_inputs=1, k=1) == [("sep_conv_3x3", 0), ("dil_conv_5x5", 1)]


def test_max_skip_caps_skip_connects_in_the_normal_cell():
    torch.manual_seed(0)
    w = torch.softmax(torch.randn(14, 8) * 0.1, -1)
    w[:, I["skip_connect"]] = 0.9  # skip dominates every edge
    free = derive_genotype(w, w, OPS)
    assert sum(op == "skip_connect" for op, _ in free.normal) == 8
    capped = derive_genotype(w, w, OPS, max_skip=2)
    assert sum(op == "skip_connect" for op, _ in capped.normal) == 2
    assert sum(op == "skip_connect" for op, _ in capped.reduce) == 8  # reduce is not capped
    assert derive_genotype(w, w, OPS, max_skip=0).normal.count(("skip_connect", 0)) == 0


def test_builtins_and_exact_json_form():
    v2 = CONV_GENOTYPES.get("DARTS_V2")
    data = json.loads(v2.to_json())
    assert data["normal"][:2] == [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]
    assert list(data) == ["normal", "normal_concat", "reduce", "reduce_concat"]
    assert data["normal_concat"] == [2, 3, 4, 5]
    for name in CONV_GENOTYPES:
        g = CONV_GENOTYPES.get(name)
        assert Genotype.from_json(g.to_json()) == g
    assert load_genotype("DARTS") == v2


def test_load_from_file_and_run_directory(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(CONV_GENOTYPES.get("DARTS_V1").to_json())
    assert load_genotype(path) == CONV_GENOTYPES.get("DARTS_V1")
    (tmp_path / "genotype.json").write_text(path.read_text())
    assert load_genotype(tmp_path) == CONV_GENOTYPES.get("DARTS_V1")


GOOD = json.loads(CONV_GENOTYPES.get("DARTS_V2").to_json())


def _with(**changes):
    g = json.loads(json.dumps(GOOD))
    g.update(changes)
    return json.dumps(g)


@pytest.mark.parametrize("text,message", [
    ("{", "malformed JSON at line 1"),
    ("[]", "expected a JSON object"),
    (json.dumps({"normal": GOOD["normal"]}), "missing field(s) normal_concat, reduce, reduce_concat"),
    (_with(extra=1), "unknown field(s) extra"),
    (_with(normal=[["sep_conv_3x3", 0]] * 3), "3 pairs is not 2 per intermediate node"),
    (_with(normal=[["conv_9x9", 0], ["sep_conv_3x3", 1]]), "normal, pair 0 (node 2): unknown op 'conv_9x9'"),
    (_with(reduce=[["max_pool_3x3", 0], ["max_pool_3x3", 2]]), "reduce, pair 1 (node 2): input 2 out of range 0..1"),
    (_with(normal=[["sep_conv_3x3", -1], ["sep_conv_3x3", 1]]), "input -1 out of range"),
    (_with(normal=[["sep_conv_3x3", True], ["sep_conv_3x3", 1]]), "input must be an integer"),
    (_with(normal=[["none", 0], ["sep_conv_3x3", 1]]), "op 'none' cannot be an edge"),
    (_with(normal=[["sep_conv_3x3"], ["sep_conv_3x3", 1]]), "expected [op, input]"),
    (_with(normal_concat=[2, 9]), "normal_concat: node 9 out of range 0..5"),
    (_with(reduce_concat=[2, 2]), "repeated node index"),
    (_with(normal=[]), "non-empty list"),
])
def test_invalid_genotypes_name_what_and_where(tmp_path, text, message):
    with pytest.raises(GenotypeError) as err:
        Genotype.from_json(text, source="g.json")
    assert message in str(err.value)
    assert str(err.value).startswith("g.json")


def test_unknown_builtin_lists_known_names():
    with pytest.raises(GenotypeError, match="DARTS_V1, DARTS_V2"):
        load_genotype("DARTS_V3")


def test_cli_prints_canonical_json_and_one_line_errors(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "dartsnas", *a], capture_output=True, text=True)
    ok = run("genotype", "DARTS_V2")
    assert ok.returncode == 0 and json.loads(ok.stdout) == GOOD
    bad = tmp_path / "bad.json"
    bad.write_text(_with(normal=[["conv_9x9", 0], ["sep_conv_3x3", 1]]))
    res = run("genotype", str(bad))
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "unknown op 'conv_9x9'" in res.stderr and str(bad) in res.stderr
    assert "Traceback" not in res.stderr


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 12) | st.floats(allow_nan=True) |
    st.sampled_from(list(DARTS_OPS) + ["x", ""]),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(
        st.sampled_from(["normal", "normal_concat", "reduce", "reduce_concat", "other"]), children, max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_random_malformed_json_only_raises_genotype_error(value):
    try:
        Genotype.from_json(json.dumps(value))
    except GenotypeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_random_text_only_raises_genotype_error(text):
    try:
        Genotype.from_json(text)
    except GenotypeError:
        pass
