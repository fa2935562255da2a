"""`ensemble: K` of the Gaussian VAE and AE (vae.SeedEnsemble): K members in one module, trained
together, each its own start and masks; the fill is their mean, draws and samples come from
every member; checkpoints made without the option load and behave as before."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from test_models import make_expression

from omicsgen.impute import impute
from omicsgen.models import get_family, load_model, sizing
from omicsgen.models.base import keep_observed, observed_mask
from omicsgen.train import train

HPARAMS = {"vae": {"hidden_dim": 32, "latent_dim": 4}, "ae": {"hidden_dim": 32, "latent_dim": 4}}
TRAINER = {"batch_size": 32, "max_epochs": 4, "learning_rate": 3e-3}
K = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    make_expression(n_cells=120, n_genes=12).write_h5ad(root / "masked.h5ad")
    return root, ad.read_h5ad(root / "masked.h5ad")


@pytest.fixture(scope="module", params=["vae", "ae"])
def trained(request, data):
    root, _ = data
    family = request.param
    checkpoint = train(root / "masked.h5ad", root / family, family, {**HPARAMS[family], "ensemble": K}, TRAINER, seed=0)
    return family, load_model(checkpoint)


def _each(model, method: str, *args) -> list:
    """`method` of every member, as the model's own public methods run them (eval, no autograd)."""
    model.eval()
    with torch.inference_mode():
        return [getattr(member, method)(*args) for member in model.members]


def _first_weight(member) -> torch.Tensor:
    return next(member.encoder.parameters()).detach()


def test_members_differ_and_the_fill_is_their_mean(trained, data):
    family, model = trained
    _, adata = data
    values, observed = adata.X, observed_mask(adata)
    assert len(model.members) == K and all(m.hparams.ensemble == 1 for m in model.others)
    weights = [_first_weight(m) for m in model.members]
    assert all(not torch.allclose(weights[0], w) for w in weights[1:])  # own starts, trained apart
    fills = _each(model, "_member_impute", values, observed)
    hidden = ~observed & ~np.isnan(adata.X)  # held-out entries: the truth is known
    assert np.abs(fills[0] - fills[1])[hidden].mean() > 1e-3  # the members disagree
    filled = model.impute(values, observed)
    expected = keep_observed(values, observed, np.mean(fills, axis=0, dtype=np.float64))
    np.testing.assert_allclose(filled, expected, rtol=1e-6)
    assert np.array_equal(filled[observed], adata.X[observed])  # observed entries, bit for bit
    # the mean's squared error is at most the members' average (convexity): a sanity check
    errors = [np.mean((f[hidden] - adata.X[hidden]) ** 2) for f in fills]
    assert np.mean((filled[hidden] - adata.X[hidden]) ** 2) <= np.mean(errors) + 1e-9


def test_every_member_trains(data):
    _, adata = data
    torch.manual_seed(0)
    model = get_family("ae").from_data(adata, **HPARAMS["ae"], ensemble=K)
    before = [_first_weight(m).clone() for m in model.members]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = get_family("ae").tensors(adata, "train")
    model.train()
    for _ in range(5):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    assert all(not torch.equal(b, _first_weight(m)) for b, m in zip(before, model.members))


def test_draws_come_from_the_members_in_turn(data, tmp_path):
    root, adata = data
    model = load_model(train(root / "masked.h5ad", tmp_path / "vae", "vae", {**HPARAMS["vae"], "ensemble": K},
                             TRAINER, seed=1))
    values, observed = adata.X, observed_mask(adata)
    draws = model.draws_at(values, observed, 7, torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    model.eval()
    with torch.inference_mode():
        parts = [m._member_draws_at(values, observed, n, generator) for m, n in zip(model.members, (3, 2, 2))]
    assert draws.shape == (7, int((~observed).sum()))
    for i, part in enumerate(parts):
        np.testing.assert_array_equal(draws[i::K], part)
    full = model.impute_draws(values, observed, 4, torch.Generator().manual_seed(0))
    assert full.shape == (4, *values.shape) and np.array_equal(full[:, observed], np.broadcast_to(values[observed], (4, int(observed.sum()))))


def test_samples_come_from_random_members(trained):
    family, model = trained
    pieces = model.rows_by_member(300, torch.Generator().manual_seed(0))
    rows = np.sort(np.concatenate([r for _, r in pieces]))
    assert np.array_equal(rows, np.arange(300)) and all(len(r) > 50 for _, r in pieces)
    samples = model.sample(40, torch.Generator().manual_seed(0))
    assert samples.shape == (40, model.hparams.n_genes) and np.isfinite(samples).all()
    assert np.array_equal(samples, model.sample(40, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("family", ["vae", "ae"])
def test_a_checkpoint_without_the_option_loads_as_before(data, tmp_path, family):
    root, adata = data
    checkpoint = train(root / "masked.h5ad", tmp_path / family, family, HPARAMS[family], TRAINER, seed=0)
    contents = torch.load(checkpoint, weights_only=False)
    assert not any(key.startswith("others.") for key in contents["state_dict"])  # member 0's names only
    del contents["hyper_parameters"]["ensemble"]  # as written before the option existed
    old = tmp_path / "old.ckpt"
    torch.save(contents, old)
    model = load_model(old)
    assert model.hparams.ensemble == 1 and len(model.members) == 1
    new = ad.read_h5ad(impute(root / "masked.h5ad", checkpoint, tmp_path / "new.h5ad", seed=0, n_draws=0))
    was = ad.read_h5ad(impute(root / "masked.h5ad", old, tmp_path / "was.h5ad", seed=0, n_draws=0))
    assert np.array_equal(new.layers["imputed"], was.layers["imputed"], equal_nan=True)


def test_sizing_sets_the_ensemble_on_small_gaussian_data_only():
    assert sizing.family_defaults("vae", 120, 30)["ensemble"] == sizing.ENSEMBLE
    assert sizing.family_defaults("ae", 120, 30) == {"ensemble": sizing.ENSEMBLE}
    assert "ensemble" not in sizing.family_defaults("vae", 120, 30, likelihood="nb")
    assert sizing.family_defaults("ae", 120, 30, likelihood="zinb") == {}
    assert sizing.family_defaults("ae", 20_000, 30) == {} and sizing.family_defaults("gain", 120, 30) == {}
    with pytest.raises(ValueError, match="ensemble"):
        get_family("ae").from_data(make_expression(n_cells=40), output="nb", ensemble=2)


def test_each_member_is_clipped_on_its_own():
    """One norm over all members would let a member's large gradient shrink the others'."""
    model = get_family("ae").from_data(make_expression(n_cells=40), **HPARAMS["ae"], ensemble=2)
    own, other = model.member_parameters()
    assert {id(p) for p in own}.isdisjoint(id(p) for p in other)
    assert len(own) + len(other) == len(list(model.parameters()))
    for parameters, size in ((own, 10.0), (other, 1e-4)):
        for p in parameters:
            p.grad = torch.full_like(p, size)
    small = [p.grad.clone() for p in other]
    model.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    assert all(torch.equal(g, p.grad) for g, p in zip(small, other))  # under its limit: untouched
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in own]))
    assert abs(float(norm) - 0.5) < 1e-4  # a K-th of the threshold: the mean loss carries a K-th of each gradient
