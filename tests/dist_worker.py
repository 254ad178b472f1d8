"""One search step, alone (batch 2B) or under torchrun (each of 2 ranks batch B); rank 0 saves what it got.

    python tests/dist_worker.py OUT.pt --batch 16
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py OUT.pt --batch 8 --sync-bn
    ... --recompute edge     # the same step with every mixed op's activations recomputed in backward
    ... --cost               # with a multiply-add penalty on α

For every order (each regularizer: second order): the α gradient of the first batch pair, then the model's whole state (w, α,
BatchNorm statistics) after one search step (α step, then w step) on it, and the step's gradient norm; with
--grad-clip the weight step and the virtual step clip. One process start serves every case (most of a case's
time is the start). Used by tests/test_distributed.py.
"""
import argparse

import torch

from dartsnas.architect import Architect
from dartsnas.cost import CostTable
from dartsnas.data import BatchLoader, load_dataset, split_portion
from dartsnas.distributed import Distributed, convert_sync_batchnorm
from dartsnas.methods.sdarts import perturb_mixing_weights
from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork
from dartsnas.train.bilevel import search_step


def one_step(dist: Distributed, order: str, batch: int, sync_bn: bool, grad_clip: float, regularizer: str,
             recompute: str, cost: bool = False) -> dict:
    data = load_dataset("digits", "train")
    train_idx, val_idx = split_portion(len(data), 0.5)
    common = dict(batch_size=batch, rank=dist.rank, world_size=dist.world_size, drop_last=True)
    train = BatchLoader(data, train_idx, seed=0, **common)
    val = BatchLoader(data, val_idx, seed=1, **common)
    torch.manual_seed(0)
    model = SearchNetwork(ConvSearchSpaceConfig(init_channels=4, layers=3, nodes=2, num_classes=10, in_channels=1,
                                                auxiliary_skip=regularizer == "darts-minus", recompute=recompute))
    model.aux_beta = 0.5 if regularizer == "darts-minus" else 0.0
    perturb = None
    if regularizer == "sdarts-rs":  # the same noise on every rank: one seeded generator each
        noise = torch.Generator().manual_seed(7)
        perturb = lambda: tuple(perturb_mixing_weights(w, 0.3, noise) for w in model.arch_weights())  # noqa: E731
    if sync_bn and dist.enabled:
        convert_sync_batchnorm(model)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    arch = Architect(model, w_opt, order=order, lr=0.01, grad_clip=grad_clip, sync=dist.average)
    if cost:  # a multiply-add penalty on α, the same on every rank
        table = CostTable.build(model.config.ops, model.config.nodes, init_channels=8, layers=3, image_size=(8, 8),
                                in_channels=1)
        arch.terms.append(lambda: table.expected("macs", *model.arch_weights(), *model.edge_weights()) / 1e4)
    net = dist.wrap(model, ignore=model.arch_parameters(), broadcast_buffers=not sync_bn)
    train_batch, val_batch = train.next_batch(), val.next_batch()
    grads = arch.alpha_grad(train_batch, val_batch, xi=0.1)
    grad_norm = search_step(model, arch, w_opt, train_batch, val_batch, 0.1, grad_clip, net=net, perturb=perturb)[2]
    return {"alpha_grad": [g.clone() for g in grads], "grad_norm": grad_norm.detach().clone(),
            "state": {k: v.clone() for k, v in model.state_dict().items()}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--orders", nargs="+", default=["first", "second"])
    p.add_argument("--grad-clip", type=float, default=5.0)
    p.add_argument("--regularizers", nargs="+", default=["none"])
    p.add_argument("--recompute", default="none", choices=("none", "cell", "edge"))
    p.add_argument("--cost", action="store_true", help="a multiply-add penalty on α (search cnn --cost macs)")
    args = p.parse_args()
    torch.set_num_threads(1)
    dist = Distributed.from_env()
    # the regularizers change the weight step, so they are checked at second order, whose α step clips
    # and takes finite differences; every order is checked without them
    result = {regularizer: {order: one_step(dist, order, args.batch, args.sync_bn, args.grad_clip, regularizer,
                                             args.recompute, args.cost)
                            for order in (args.orders if regularizer == "none" else ["second"])}
              for regularizer in args.regularizers}
    if dist.is_main:
        torch.save(result, args.out)
    dist.close()


if __name__ == "__main__":
    main()
