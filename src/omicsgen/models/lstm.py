"""Autoregressive recurrent language models over token matrices (DNA, RNA, protein, alignments):
one class, an LSTM or a GRU cell (families `lstm` and `gru` on sequence data).

Imputation conditions on both sides of a gap by default: each unobserved position takes the
content token c maximising log p(c | left) + log p(next `impute_window` tokens | left, c), the
right-hand tokens scored where observed (unobserved ones are fed as MISSING, as in training).
`impute_mode: left` keeps the plain left-to-right greedy fill.
"""

from __future__ import annotations

from typing import ClassVar

import anndata as ad
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..alphabet import GAP, MISSING, PAD
from .base import (
    GenerativeModel,
    inference,
    keep_observed,
    observed_mask,
    row_chunks,
    split_rows,
)

IGNORED = -100  # target id that cross_entropy skips


IMPUTE_MODES = ("two_sided", "left")


class RecurrentLanguageModel(GenerativeModel):
    """Predicts each token from BOS and the tokens to its left; pad (0) doubles as end-of-sequence.

    Unobserved positions (natively missing or held out) are fed as the MISSING id, so the model
    knows a residue is there without seeing it, and are never a target. Targets past a
    record's first pad are ignored: the record has ended. Subclasses fix the recurrent cell.
    """

    cell_type: ClassVar[str]
    modalities = ("sequence",)
    shape_hparams = ("vocab_size", "max_length")
    defaults = {
        "embed_dim": 32,
        "hidden_dim": 128,
        "n_layers": 1,
        "dropout": 0.1,
        "learning_rate": 2e-3,
        "temperature": 1.0,
        "impute_mode": "two_sided",
        "impute_window": 24,
    }

    def __init__(self, vocab_size, max_length, embed_dim, hidden_dim, n_layers, dropout, learning_rate, temperature,
                 impute_mode="two_sided", impute_window=24):
        super().__init__()
        if impute_mode not in IMPUTE_MODES:
            raise ValueError(f"{self.family}: impute_mode must be one of {', '.join(IMPUTE_MODES)}, not {impute_mode!r}")
        self.save_hyperparameters()
        self.bos = vocab_size  # an input-only id, one past the alphabet
        self.embedding = nn.Embedding(vocab_size + 1, embed_dim)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[self.cell_type]
        # Named after the cell ("lstm" / "gru"): checkpoints from before the GRU variant load as they are.
        setattr(self, self.cell_type, rnn(embed_dim, hidden_dim, n_layers, batch_first=True,
                                          dropout=dropout if n_layers > 1 else 0.0))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, vocab_size)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["hyper_parameters"]["modality"] = "sequence"

    @staticmethod
    def data_sizes(adata: ad.AnnData) -> dict:
        return {"vocab_size": len(adata.uns["alphabet"]["symbols"]), "max_length": int(adata.obsm["tokens"].shape[1])}

    @staticmethod
    def tensors(adata: ad.AnnData, split) -> dict[str, torch.Tensor]:
        rows = split_rows(adata, split)
        tokens = np.where(observed_mask(adata)[rows], adata.obsm["tokens"][rows], MISSING)
        return {"tokens": torch.from_numpy(tokens.astype(np.int64))}

    # ---- network ------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, state=None) -> tuple[torch.Tensor, tuple]:
        """Logits over the alphabet for the token after each input position."""
        hidden, state = getattr(self, self.cell_type)(self.embedding(inputs), state)
        return self.head(self.dropout(hidden)), state

    def _next_token_logits(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, targets) for positions 0..L, where target L is the end after a full-length record."""
        bos = torch.full_like(tokens[:, :1], self.bos)
        logits, _ = self(torch.cat([bos, tokens], dim=1))
        return logits, torch.cat([tokens, torch.full_like(tokens[:, :1], PAD)], dim=1)

    def loss(self, batch):
        logits, targets = self._next_token_logits(batch["tokens"])
        # ignore_index rather than boolean selection: no gather/scatter of the logits in backward.
        targets = targets.masked_fill(~scored_targets(targets), IGNORED)
        return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORED)

    # ---- use ----------------------------------------------------------------------------
    @inference
    def log_likelihood(self, tokens: np.ndarray, observed: np.ndarray | None = None) -> np.ndarray:
        """log p(tokens[i, j] | observed tokens left of j), n x L float32.

        Inputs at unobserved positions are hidden (MISSING), so a held-out token can be scored
        without the model having seen it. NaN where nothing is scored: MISSING tokens and
        positions after the record's first pad (the first pad itself is scored, as the end).
        """
        observed = tokens != MISSING if observed is None else observed
        hidden_input = np.where(observed, tokens, MISSING).astype(np.int64)
        parts = []
        for rows in row_chunks(len(tokens)):
            logits, _ = self._next_token_logits(torch.from_numpy(hidden_input[rows]).to(self.device))
            truth = torch.from_numpy(tokens[rows].astype(np.int64)).to(self.device)
            log_probs = logits[:, :-1].log_softmax(-1).gather(-1, truth.unsqueeze(-1)).squeeze(-1)
            parts.append(log_probs.masked_fill(~scored_targets(truth), float("nan")).cpu())
        return torch.cat(parts).numpy() if parts else np.zeros(tokens.shape, dtype=np.float32)

    @inference
    def impute(self, values: np.ndarray, observed: np.ndarray, obs=None) -> np.ndarray:
        """Fill unobserved positions left to right with a content token (gap or residue), each
        filled token fed to the positions after it. `impute_mode` two_sided (default) picks the
        token that best explains both its left context and the next `impute_window` tokens;
        left picks the most probable token given the left context only. MISSING tokens count
        as unobserved whatever `observed` says."""
        unobserved = ~observed | (values == MISSING)
        fill = self._fill_two_sided if self.hparams.impute_mode == "two_sided" else self._fill_greedy
        filled = [fill(values[rows], unobserved[rows]) for rows in row_chunks(len(values))]
        predicted = np.concatenate(filled) if filled else values
        return keep_observed(values, ~unobserved, predicted)

    def _fill_greedy(self, tokens: np.ndarray, unobserved: np.ndarray) -> np.ndarray:
        tokens_t = torch.from_numpy(tokens.astype(np.int64)).to(self.device)
        unobserved_t = torch.from_numpy(unobserved).to(self.device)
        current, state, out = torch.full_like(tokens_t[:, :1], self.bos), None, tokens_t.clone()
        for position in range(tokens_t.shape[1]):
            logits, state = self(current, state)
            best_content = logits[:, -1, GAP:].argmax(-1) + GAP
            out[:, position] = torch.where(unobserved_t[:, position], best_content, tokens_t[:, position])
            current = out[:, position : position + 1]
        return out.cpu().numpy().astype(np.int8)

    def _fill_two_sided(self, tokens: np.ndarray, unobserved: np.ndarray) -> np.ndarray:
        tokens_t = torch.from_numpy(tokens.astype(np.int64)).to(self.device)
        unobserved_t = torch.from_numpy(unobserved).to(self.device)
        # What the right-hand windows see: unobserved -> MISSING, then the end (pad) after position L-1.
        visible = torch.where(unobserved_t, MISSING, tokens_t)
        visible = torch.cat([visible, torch.full_like(visible[:, :1], PAD)], dim=1)
        current, state, out = torch.full_like(tokens_t[:, :1], self.bos), None, tokens_t.clone()
        for position in range(tokens_t.shape[1]):
            logits, state = self(current, state)  # state has read everything left of `position`
            rows = unobserved_t[:, position].nonzero().squeeze(1)
            if len(rows):
                right = visible[rows, position + 1 : position + 1 + self.hparams.impute_window]
                out[rows, position] = self._best_candidate(logits[rows, -1], _select_state(state, rows), right)
            current = out[:, position : position + 1]
        return out.cpu().numpy().astype(np.int8)

    def _best_candidate(self, logits: torch.Tensor, state, right: torch.Tensor) -> torch.Tensor:
        """For r rows: the content token c maximising log p(c | left) + log p(right | left, c),
        `right` (r x w) scored where observed and up to the record's end."""
        candidates = torch.arange(GAP, self.hparams.vocab_size, device=logits.device)
        n_rows, n_cand = len(logits), len(candidates)
        score = logits.log_softmax(-1)[:, candidates]
        window_inputs = torch.cat([candidates.repeat(n_rows)[:, None], right[:, :-1].repeat_interleave(n_cand, 0)], 1)
        window_logits, _ = self(window_inputs, _repeat_state(state, n_cand))
        targets = right.repeat_interleave(n_cand, 0)
        log_p = window_logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        right_score = log_p.masked_fill(~scored_targets(targets), 0.0).sum(1).view(n_rows, n_cand)
        return candidates[(score + right_score).argmax(1)]

    @inference
    def sample(self, n: int, generator: torch.Generator, temperature: float | None = None) -> np.ndarray:
        """n x L int8 records by ancestral sampling; MISSING is never drawn, a record stops at its
        first pad and is padded after it; records are cut at L."""
        temperature = self.hparams.temperature if temperature is None else temperature
        batches = [self._sample_batch(rows.stop - rows.start, generator, temperature) for rows in row_chunks(n)]
        length = self.hparams.max_length
        return np.concatenate(batches) if batches else np.zeros((0, length), dtype=np.int8)

    def _sample_batch(self, n: int, generator: torch.Generator, temperature: float) -> np.ndarray:
        out = torch.zeros(n, self.hparams.max_length, dtype=torch.int64)
        ended = torch.zeros(n, dtype=torch.bool)
        current, state = torch.full((n, 1), self.bos, dtype=torch.int64, device=self.device), None
        for position in range(self.hparams.max_length):
            logits, state = self(current, state)
            logits = logits[:, -1].cpu() / temperature
            logits[:, MISSING] = -torch.inf
            drawn = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
            out[:, position] = drawn.masked_fill(ended, PAD)
            ended |= drawn == PAD
            current = out[:, position : position + 1].to(self.device)
        return out.numpy().astype(np.int8)


def scored_targets(targets: torch.Tensor) -> torch.Tensor:
    """True at targets that count: up to and including the first pad, and not MISSING."""
    is_pad = (targets == PAD).long()
    before_end = (is_pad.cumsum(1) - is_pad) == 0
    return before_end & (targets != MISSING)


class LSTMLanguageModel(RecurrentLanguageModel):
    family = "lstm"
    cell_type = "lstm"


class GRULanguageModel(RecurrentLanguageModel):
    family = "gru"
    cell_type = "gru"


def _select_state(state, rows: torch.Tensor):
    """Rows of a recurrent state (GRU: h; LSTM: (h, c); batch is dimension 1)."""
    if isinstance(state, tuple):
        return tuple(part[:, rows] for part in state)
    return state[:, rows]


def _repeat_state(state, times: int):
    """Each row of a recurrent state repeated `times` times in place (row-major, as repeat_interleave)."""
    if isinstance(state, tuple):
        return tuple(part.repeat_interleave(times, 1) for part in state)
    return state.repeat_interleave(times, 1)
