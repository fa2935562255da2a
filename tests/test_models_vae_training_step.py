"""The VAE's cheaper training step computes what the plain formulas compute: the split first
layer equals a Linear over the concatenated input, the nonzero-only count NLL equals the
elementwise log-probabilities summed over observed entries, values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from omicsgen.models import counts as cm
from omicsgen.models.vae import SplitInputLinear


@pytest.mark.parametrize("fully_observed", [True, False])
@pytest.mark.parametrize("n_labels", [0, 3])
def test_split_input_linear_is_a_linear_over_the_concatenation(fully_observed, n_labels):
    generator = torch.Generator().manual_seed(0)
    n_rows, n_genes, hidden = 6, 20, 8
    x = torch.randn(n_rows, n_genes, generator=generator)
    mask = torch.ones(n_rows, n_genes) if fully_observed else (torch.rand(n_rows, n_genes, generator=generator) > 0.3).float()
    cond = F.one_hot(torch.arange(n_rows) % n_labels, n_labels).float() if n_labels else None
    weight = torch.randn(hidden, 2 * n_genes + n_labels, generator=generator, requires_grad=True)
    bias = torch.randn(hidden, generator=generator, requires_grad=True)
    plain = F.linear(torch.cat([x, mask] + ([cond] if n_labels else []), dim=1), weight, bias)
    split = SplitInputLinear.apply(x, None if fully_observed else mask, cond, weight, bias)
    grad_out = torch.randn(plain.shape, generator=generator)
    expected = torch.autograd.grad(plain, [weight, bias], grad_out)
    got = torch.autograd.grad(split, [weight, bias], grad_out)
    assert torch.allclose(plain, split, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(expected, got))


@pytest.mark.parametrize("zero_inflated", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_row_nll_equals_the_elementwise_log_prob(zero_inflated, with_mask):
    generator = torch.Generator().manual_seed(1)
    n_rows, n_genes = 40, 25
    counts = torch.poisson(torch.rand(n_rows, n_genes, generator=generator) * 3, generator=generator)
    counts = counts * (torch.rand(n_rows, n_genes, generator=generator) < 0.4)  # mostly zeros, as in 10x data
    library = torch.rand(n_rows, generator=generator) * 500 + 50
    logits = torch.randn(n_rows, n_genes + 1, generator=generator, requires_grad=True)
    log_theta = torch.randn(n_genes, generator=generator, requires_grad=True)
    pi_logits = torch.randn(n_rows, n_genes, generator=generator, requires_grad=True)
    observed = torch.rand(n_rows, n_genes, generator=generator) > 0.2

    def params():
        out = {"rho": torch.softmax(logits, 1)[:, :n_genes], "theta": log_theta.exp()}
        return {**out, "pi_logits": pi_logits} if zero_inflated else out

    leaves = [logits, log_theta] + ([pi_logits] if zero_inflated else [])
    weights = observed.float() if with_mask else torch.ones(n_rows, n_genes)
    plain = (cm.count_log_prob(counts, library, params()) * weights).sum(1)
    fast = cm.observed_log_prob_rows(counts, library, params(), observed if with_mask else None)
    assert torch.allclose(plain, fast, rtol=1e-5, atol=1e-4)
    expected = torch.autograd.grad(plain.sum(), leaves)
    got = torch.autograd.grad(fast.sum(), leaves)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(expected, got))


def test_gene_shares_are_the_softmax_without_the_rest_bucket():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(9, 13, generator=generator, requires_grad=True)
    grad_out = torch.randn(9, 12, generator=generator)
    plain = torch.softmax(logits, dim=-1)[:, :-1]
    shares = cm.GeneShares.apply(logits)
    assert torch.allclose(plain, shares)
    expected, got = (torch.autograd.grad(out, logits, grad_out)[0] for out in (plain, shares))
    assert torch.allclose(expected, got, atol=1e-6)
