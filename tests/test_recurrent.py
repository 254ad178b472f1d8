import os
from pathlib import Path

import pytest
import torch

from dartsnas.architect import Architect
from dartsnas.data.text import Corpus, batchify, get_window
from dartsnas.errors import DataError, GenotypeError
from dartsnas.genotype import RecurrentGenotype, derive_recurrent_genotype, load_genotype
from dartsnas.nets.recurrent import DerivedCell, RNNConfig, build_rnn_model
from dartsnas.ops import RNN_DARTS_OPS, RNN_OPS
from dartsnas.spaces import RecurrentSearchModel, RecurrentSearchSpaceConfig

PTB = Path(os.environ.get("DARTSNAS_PTB", Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"))
needs_ptb = pytest.mark.skipif(not (PTB / "valid.txt").is_file(), reason="shared PTB splits not found")


@needs_ptb
def test_real_ptb_token_counts():
    corpus = Corpus(PTB, splits=("valid", "test"))
    assert corpus["valid"].numel() == 73_760 and corpus["test"].numel() == 82_430
    words = corpus.dictionary.idx2word
    assert "<eos>" in words and "<unk>" in words and corpus.vocab_size > 6_049
    assert (corpus["valid"] == corpus.dictionary.word2idx["<eos>"]).sum() == 3_370  # one per line
    data = batchify(corpus["valid"], 32)
    assert data.shape == (32, 73_760 // 32)
    x, y = get_window(data, 0, 35)
    assert x.shape == (35, 32) and torch.equal(y.view(35, 32)[:-1], x[1:])


@pytest.mark.parametrize("names", [("train.txt", "valid.txt", "test.txt"),
                                   ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
                                   ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")])
def test_corpus_layouts(tmp_path, names):
    texts = [" = Title = \n the cat sat \n", " the dog \n", " a cat \n\n"]
    for name, text in zip(names, texts):
        (tmp_path / name).write_text(text)
    corpus = Corpus(tmp_path)
    assert corpus.dictionary.idx2word[:6] == ["=", "Title", "<eos>", "the", "cat", "sat"]
    assert corpus["train"].numel() == 3 + 1 + 3 + 1  # each line ends with <eos>
    assert corpus["test"].numel() == 2 + 1 + 0 + 1  # an empty line still gives <eos>


def test_corpus_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Corpus(tmp_path / "none")
    (tmp_path / "valid.txt").write_text("a b\n")
    with pytest.raises(DataError, match="no train split \\(looked for train.txt, ptb.train.txt, wiki.train.tokens\\)"):
        Corpus(tmp_path)
    (tmp_path / "train.txt").write_text("\n\n")
    (tmp_path / "test.txt").write_text("c\n")
    with pytest.raises(DataError, match="train.txt: empty corpus file"):
        Corpus(tmp_path)
    (tmp_path / "train.txt").write_bytes(b"ok \xff\xfe bad\n")
    with pytest.raises(DataError, match="train.txt: not UTF-8"):
        Corpus(tmp_path)


def test_sizes_of_the_papers_models():
    v2 = load_genotype("DARTS_V2", "rnn")
    count = lambda cfg: sum(p.numel() for p in build_rnn_model(v2, cfg).parameters())
    assert count(RNNConfig()) == 22_960_000                                       # PTB, 850/850
    assert count(RNNConfig(vocab_size=33_278, emsize=700, nhid=700)) == 33_127_878  # WikiText-2


def test_derived_cell_step_against_a_hand_written_highway_recurrence():
    torch.manual_seed(0)
    g = load_genotype("DARTS_V2", "rnn")
    cell = DerivedCell(6, 6, g).double().eval()
    x, h = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    c0, h0 = torch.split(torch.cat([x, h], 1) @ cell.W0, 6, dim=1)
    states = [h + torch.sigmoid(c0) * (torch.tanh(h0) - h)]
    acts = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda t: t}
    for i, (op, j) in enumerate(g.recurrent):
        c, hh = torch.split(states[j] @ cell.Ws[i], 6, dim=1)
        states.append(states[j] + torch.sigmoid(c) * (acts[op](hh) - states[j]))
    expected = sum(states[1:]) / 8
    torch.testing.assert_close(cell(x[None], h)[0], expected)
    out = cell(torch.randn(5, 3, 6, dtype=torch.float64), h)
    assert out.shape == (5, 3, 6)


def test_search_model_shapes_and_k1_derivation():
    model = RecurrentSearchModel(RecurrentSearchSpaceConfig(vocab_size=40, emsize=8, nhid=8))
    assert model.alpha.shape == (36, 5)
    logp, last, raw, dropped = model(torch.randint(0, 40, (7, 3)), model.init_hidden(3))
    assert logp.shape == (21, 40) and last.shape == (3, 8) and raw.shape == dropped.shape == (7, 3, 8)
    w = torch.full((36, 5), 0.1)
    w[0, RNN_DARTS_OPS.index("sigmoid")] = 0.5                   # node 1 <- state 0
    w[1 + 1, RNN_DARTS_OPS.index("relu")] = 0.6                   # node 2 <- state 1
    w[1 + 2 + 3, RNN_DARTS_OPS.index("none")] = 0.99              # node 4: 'none' never chosen
    g = derive_recurrent_genotype(w, RNN_DARTS_OPS)
    assert g.recurrent[:2] == (("sigmoid", 0), ("relu", 1)) and g.recurrent[3][0] != "none"
    assert g.concat == tuple(range(1, 9))


def test_recurrent_genotype_json_and_errors():
    v2 = load_genotype("DARTS_V2", "rnn")
    assert RecurrentGenotype.from_json(v2.to_json()) == v2
    assert v2.to_dict()["recurrent"][0] == ["sigmoid", 0]
    for text, msg in [('{"recurrent": [["relu", 1]], "concat": [1]}', "input 1 out of range 0..0"),
                      ('{"recurrent": [["sep_conv_3x3", 0]], "concat": [1]}', "unknown op 'sep_conv_3x3'"),
                      ('{"recurrent": [["relu", 0]]}', "missing field(s) concat"),
                      ('{"recurrent": [["relu", 0]], "concat": [2]}', "node 2 out of range")]:
        with pytest.raises(GenotypeError, match=msg.replace("(", "\\(").replace(")", "\\)")):
            RecurrentGenotype.from_json(text)


def test_second_order_matches_exact_on_a_smooth_recurrent_model():
    if "softplus" not in RNN_OPS:
        RNN_OPS.register("softplus")(lambda t: torch.nn.functional.softplus(t, beta=4.0))
    torch.manual_seed(0)
    cfg = RecurrentSearchSpaceConfig(vocab_size=30, emsize=6, nhid=6, nodes=3, dropout=0, dropout_h=0,
                                     dropout_x=0, dropout_i=0, ops=("none", "tanh", "softplus", "sigmoid", "identity"))
    model = RecurrentSearchModel(cfg).double()
    with torch.no_grad():
        model.alpha.normal_(0, 0.5)
    opt = torch.optim.SGD(model.weight_parameters(), lr=1.0, weight_decay=5e-7)
    g = torch.Generator().manual_seed(1)
    batch = lambda: (torch.randint(0, 30, (5, 4), generator=g), torch.randint(0, 30, (20,), generator=g),
                     torch.zeros(4, 6, dtype=torch.float64))
    train, val = batch(), batch()
    exact = Architect(model, opt, order="exact").alpha_grad(train, val, xi=1.0)
    arch = Architect(model, opt, order="second", fd_step=1e-4)
    second = arch.alpha_grad(train, val, xi=1.0)
    a, b = exact[0].flatten(), second[0].flatten()
    assert float(a @ b / (a.norm() * b.norm())) >= 0.999
    assert arch.val_extra.shape == (4, 6)  # the validation stream's next state comes back


def test_search_cell_mixture_equals_the_per_op_highway_sum():
    torch.manual_seed(0)
    model = RecurrentSearchModel(RecurrentSearchSpaceConfig(vocab_size=20, emsize=5, nhid=5, nodes=3)).double().eval()
    with torch.no_grad():
        model.alpha.normal_(0, 1.0)
    cell = model.cell
    cell.weights = model.arch_weights().double()
    x, h_prev = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    # The reference formulation: every op of every edge through its own highway gate.
    c0, h0 = torch.split(torch.cat([x, h_prev], 1) @ cell.W0, 5, dim=1)
    states = [cell.bn(h_prev + torch.sigmoid(c0) * (torch.tanh(h0) - h_prev))]
    row = 0
    for i in range(3):
        s = 0
        for j in range(i + 1):
            c, h = torch.split(states[j] @ cell.Ws[i], 5, dim=-1)
            for k, name in enumerate(RNN_DARTS_OPS):
                if name != "none":
                    s = s + cell.weights[row + j, k] * (states[j] + torch.sigmoid(c) * (RNN_OPS.get(name)(h) - states[j]))
        states.append(cell.bn(s))
        row += i + 1
    torch.testing.assert_close(cell(x[None], h_prev)[0], sum(states[1:]) / 3)


def test_compiled_time_step_gives_the_eager_search_step():
    # aot_eager traces the step with dynamo and AOTAutograd (guards, swapped parameters of the
    # functional virtual step, frozen BN statistics) without generating C++: fast enough for the suite.
    import torch._dynamo
    torch._dynamo.reset()
    cfg = RecurrentSearchSpaceConfig(vocab_size=30, emsize=6, nhid=6, nodes=2)
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = RecurrentSearchModel(cfg).double()  # float64: reordered float sums would blur the comparison
        if compiled:
            model.cell.compile_step(backend="aot_eager")
        opt = torch.optim.SGD(model.weight_parameters(), lr=1.0)
        arch = Architect(model, opt, order="second", lr=0.1)  # also runs every first-order variant
        g = torch.Generator().manual_seed(1)
        for _ in range(2):
            batch = lambda: (torch.randint(0, 30, (5, 4), generator=g), torch.randint(0, 30, (20,), generator=g),
                             torch.zeros(4, 6, dtype=torch.float64))
            arch.step(batch(), batch(), 1.0)
            x, y, h = batch()
            opt.zero_grad()
            torch.nn.functional.nll_loss(model(x, h)[0], y).backward()
            opt.step()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert hasattr(model.cell, "_compiled_step")
    torch.testing.assert_close(results[1], results[0], rtol=1e-9, atol=1e-10)


def test_activation_regularisation_adds_alpha_times_the_mean_square_of_the_dropped_outputs():
    """DARTS's rnn/train.py (AWD-LSTM): loss = NLL + α·mean(dropped_rnn_h²) of the last layer, the
    cell's outputs after the output dropout, beside TAR's β·mean((h_t - h_{t-1})²) on them before it."""
    from dartsnas.train.lm import lm_weight_loss
    from dartsnas.train.final_rnn import RNNTrainConfig
    model = build_rnn_model(load_genotype("DARTS_V2", "rnn"), RNNConfig(vocab_size=30, emsize=8, nhid=8)).train()
    x, y = torch.randint(0, 30, (6, 4)), torch.randint(0, 30, (24,))
    h = model.init_hidden(4)

    def loss(tar, ar):
        torch.manual_seed(5)  # the same dropout masks in each call
        return lm_weight_loss(model, x, y, h, tar=tar, ar=ar)[0]
    torch.manual_seed(5)
    _, _, raw, dropped = model(x, h)
    assert not torch.equal(raw, dropped)  # the output dropout acted
    torch.testing.assert_close(loss(0.0, 2.0) - loss(0.0, 0.0), 2.0 * dropped.pow(2).mean())
    torch.testing.assert_close(loss(1.0, 2.0) - loss(0.0, 2.0), (raw[1:] - raw[:-1]).pow(2).mean())
    assert RNNTrainConfig(data_dir="x", ar=2.0).ar == 2.0
