"""The chunked (--loss-chunk) contrastive losses against the full ones: values and gradients."""

import socket

import pytest
import torch
import torch.nn.functional as F

from trainer.loss import ClipLoss, SigLipLoss, _TiledLogSumExp, _TiledSoftplusSum, build

LOSSES = {"clip": ClipLoss, "siglip": SigLipLoss}


def inputs(batch, dim=12, seed=0, dtype=torch.float64, scale=7.3, bias=-3.0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(batch, dim, generator=g, dtype=dtype), dim=-1)
    txt = F.normalize(torch.randn(batch, dim, generator=g, dtype=dtype), dim=-1)
    leaves = [img, txt, torch.tensor(scale, dtype=dtype), torch.tensor(bias, dtype=dtype)]
    return [t.requires_grad_() for t in leaves]


def value_and_grads(loss_fn, leaves):
    loss = loss_fn(*leaves)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return loss, grads


@pytest.mark.parametrize("name", ["clip", "siglip"])
@pytest.mark.parametrize(("batch", "chunk"), [(8, 3), (7, 4), (16, 16), (5, 32), (9, 1), (12, 5)])
def test_chunked_loss_equals_the_full_loss_and_its_gradients(name, batch, chunk):
    leaves = inputs(batch, seed=batch * 31 + chunk)
    full, full_grads = value_and_grads(LOSSES[name](), leaves)
    tiled, tiled_grads = value_and_grads(LOSSES[name](chunk=chunk), leaves)
    assert tiled.item() == pytest.approx(full.item(), abs=1e-12)
    for which, a, b in zip(
        ("image", "text", "scale", "bias"), full_grads, tiled_grads, strict=True
    ):
        if a is None:  # the CLIP loss has no bias
            assert b is None and name == "clip", which
        else:
            assert torch.allclose(a, b, rtol=0, atol=1e-12), which


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_float32_chunked_loss_is_within_1e5_of_the_full_loss(name):
    leaves = inputs(64, dim=32, dtype=torch.float32, scale=30.0, bias=-10.0)
    full, full_grads = value_and_grads(LOSSES[name](), leaves)
    tiled, tiled_grads = value_and_grads(LOSSES[name](chunk=24), leaves)
    assert tiled.item() == pytest.approx(full.item(), rel=1e-5)
    for a, b in zip(full_grads, tiled_grads, strict=True):
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
            assert b.dtype == torch.float32


def test_tiled_functions_pass_gradcheck():
    q, k, scale, bias = inputs(5, dim=4, seed=3)
    k = torch.cat([k, k.detach().flip(0)]).detach().requires_grad_()  # more columns than rows
    assert torch.autograd.gradcheck(lambda *a: _TiledLogSumExp.apply(*a, 2), (q, k, scale))
    assert torch.autograd.gradcheck(lambda *a: _TiledSoftplusSum.apply(*a, 3), (q, k, scale, bias))


def test_chunked_loss_under_bf16_autocast_stays_close_and_keeps_dtypes():
    img, txt, scale, _ = inputs(32, dim=16, dtype=torch.float32, scale=20.0)
    full = ClipLoss()(img, txt, scale)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tiled = ClipLoss(chunk=8)(img.bfloat16(), txt.bfloat16(), scale)
    assert tiled.dtype == torch.float32  # the tiles are summed in fp32, not bf16
    assert tiled.item() == pytest.approx(full.item(), rel=2e-2)  # only the bf16 inputs differ


def test_build_passes_the_chunk():
    assert build("clip", 0, 1, chunk=6).chunk == 6 and build("siglip", 1, 2).chunk == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, name, batch, chunk, out_dir):
    """One rank of a gloo group: its slice of the global batch, chunked and full losses."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        img, txt, scale, bias = inputs(batch * world)
        local = [
            img.detach()[rank * batch : (rank + 1) * batch].clone().requires_grad_(),
            txt.detach()[rank * batch : (rank + 1) * batch].clone().requires_grad_(),
            scale.detach().clone().requires_grad_(),
            bias.detach().clone().requires_grad_(),
        ]
        results = {}
        for c in (0, chunk):
            loss = LOSSES[name](rank=rank, world_size=world, chunk=c)
            value, grads = value_and_grads(loss, local)
            results[c] = (value.detach(), [g if g is None else g.detach() for g in grads])
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_two_gloo_ranks_chunked_equal_full_and_one_process(name, tmp_path):
    """Each rank scores its 6 rows against the 12 gathered ones: the chunked loss equals the
    full one rank by rank, and together the ranks give the one-process loss and gradients."""
    import torch.multiprocessing as mp

    world, batch, chunk = 2, 6, 4  # 4 does not divide 6 or 12: ragged tiles at the rank seam
    mp.spawn(
        _rank_main, args=(world, _free_port(), name, batch, chunk, str(tmp_path)), nprocs=world
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for results in ranks:
        (full, full_grads), (tiled, tiled_grads) = results[0], results[chunk]
        assert tiled.item() == pytest.approx(full.item(), abs=1e-12)
        for a, b in zip(full_grads, tiled_grads, strict=True):
            assert (a is None and b is None) or torch.allclose(a, b, rtol=0, atol=1e-12)
    whole, whole_grads = value_and_grads(LOSSES[name](), inputs(batch * world))
    # DDP averages the ranks: the loss and the scale's gradient are means over ranks; a
    # feature's gradient sums every rank's loss through the gather, world x the one-process one
    tiled = [r[chunk] for r in ranks]
    assert sum(t[0].item() for t in tiled) / world == pytest.approx(whole.item(), abs=1e-12)
    for i in (0, 1):
        joined = torch.cat([t[1][i] for t in tiled]) / world
        assert torch.allclose(joined, whole_grads[i], rtol=0, atol=1e-12)
    for i in (2, 3):
        if whole_grads[i] is not None:
            mean = sum(t[1][i] for t in tiled) / world
            assert torch.allclose(mean, whole_grads[i], rtol=0, atol=1e-12)
