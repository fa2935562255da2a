"""Autoregressive recurrent language models over token matrices (DNA, RNA, protein, alignments):
one class, an LSTM or a GRU cell (families `lstm` and `gru` on sequence data).

Imputation conditions on both sides of a gap by default: each unobserved position takes the
content token c maximising log p(c | left) + log p(next `impute_window` tokens | left, c), the
right-hand tokens scored where observed (unobserved ones are fed as MISSING, as in training).
`impute_mode: left` keeps the plain left-to-right greedy fill.

Training is truncated back-propagation through time: a batch of records is read `bptt_steps`
positions at a time, the recurrent state carried (detached) from one chunk to the next, with one
optimiser step per chunk. A 1.5 kb record thus gives six steps, not one, and the state that
sampling carries over 1.5 kb is the state training carried (records of up to `bptt_steps`
positions train exactly as a whole-record pass). Rows whose records have ended leave the batch.

Each token is read with its position in the record (`position_features` sinusoids, periods of
8 to 8,192 positions): without it a sampled 16S gene lost its place along the gene, and its
windows drifted towards the family's average composition (held-out perplexity on 70 genes
2.18 -> 2.04 with it).

The sampling temperature (`temperature: auto`) is chosen on the validation rows once, when
fitting ends, with the weights of the epoch of lowest validation loss (the weights `train`
keeps): `TEMPERATURE_DRAWS` records are drawn at each temperature of `TEMPERATURES` (the same
random numbers for each) and the one whose records' 3-mer profiles lie closest to the
validation records' (MMD, what the classifier two-sample test reads) is kept in the
hyper-parameter `sampling_temperature`. (Choosing it at every improvement gave the same
temperature and weights: sampling draws from its own generator, not training's random state;
it cost ~0.6 s an epoch, ~6% of a 200 nt ChIP-seq train job.)
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import anndata as ad
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..alphabet import GAP, MISSING, PAD
from ..progress import Progress
from .base import (
    GenerativeModel,
    inference,
    keep_observed,
    observed_mask,
    row_chunks,
    split_rows,
    with_lr_schedule,
)

LOG = logging.getLogger(__name__)

IGNORED = -100  # target id that cross_entropy skips


IMPUTE_MODES = ("two_sided", "left")
SAMPLED_LENGTHS = ("train", "model")
TEMPERATURES = (1.0, 0.9, 0.8, 0.7, 0.6)
TEMPERATURE_DRAWS = 128  # records drawn per temperature when choosing it
TEMPERATURE_KMER = 3
TEMPERATURE_REFERENCE = 512  # validation records compared with at most
TEMPERATURE_STATE = "omicsgen_lm_temperature"  # checkpoint key of the best weights kept for the choice


class RecurrentLanguageModel(GenerativeModel):
    """Predicts each token from BOS and the tokens to its left; pad (0) doubles as end-of-sequence.

    Unobserved positions (natively missing or held out) are fed as the MISSING id, so the model
    knows a residue is there without seeing it, and are never a target. Targets past a
    record's first pad are ignored: the record has ended. Subclasses fix the recurrent cell.
    """

    cell_type: ClassVar[str]
    modalities = ("sequence",)
    shape_hparams = ("vocab_size", "max_length")
    sized_to_data = True
    # Small data trains for up to this many steps (sizing; early stopping usually ends it first).
    # 1,500 left a long conserved family still learning: 70 16S genes, val loss 0.94 nats and
    # falling at 1,500 steps, c2st 0.945; 300 steps without improvement stop it anyway.
    small_data_steps = 4000
    # True: large sets train on small batches for at most 10 epochs or about sizing.LM_POSITIONS
    # positions, at twice the rate, annealed (sizing.lm_budget).
    reads_positions: ClassVar[bool] = False
    defaults = {
        "embed_dim": 32,
        "hidden_dim": 128,
        "n_layers": 1,
        "dropout": 0.1,
        "learning_rate": 2e-3,
        "temperature": "auto",  # or a number: sampling temperature (auto: chosen on the validation rows)
        "bptt_steps": 256,  # positions per truncated back-propagation chunk (state carried between chunks)
        "impute_mode": "two_sided",
        "impute_window": 24,
        "lengths": "train",  # generated record lengths: drawn from the train records' (train), or the model's own end token (model)
        "position_features": 16,  # sinusoids of the position fed beside each token (0 = none; see `position_encoding`)
    }

    def __init__(self, vocab_size, max_length, embed_dim, hidden_dim, n_layers, dropout, learning_rate, temperature,
                 impute_mode="two_sided", impute_window=24, bptt_steps=None, sampling_temperature=None,
                 lengths="model", position_features=0):
        super().__init__()
        if impute_mode not in IMPUTE_MODES:
            raise ValueError(f"{self.family}: impute_mode must be one of {', '.join(IMPUTE_MODES)}, not {impute_mode!r}")
        if temperature != "auto" and not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"{self.family}: temperature must be auto or a positive number, not {temperature!r}")
        if lengths not in SAMPLED_LENGTHS:
            raise ValueError(f"{self.family}: lengths must be one of {', '.join(SAMPLED_LENGTHS)}, not {lengths!r}")
        if int(position_features) < 0 or int(position_features) % 2:
            raise ValueError(f"{self.family}: position_features must be an even number >= 0, not {position_features!r}")
        if bptt_steps is not None and int(bptt_steps) < 1:
            raise ValueError(f"{self.family}: bptt_steps must be a positive integer, not {bptt_steps!r}")
        self.save_hyperparameters()
        # Manual steps: one per truncated-BPTT chunk (`training_step`). Checkpoints from before
        # (bptt_steps None) read whole records, as they were trained.
        self.automatic_optimization = False
        self.gradient_clip = None
        self._val_tokens: list[torch.Tensor] = []
        self._best_val = float("inf")
        self._best_for_temperature = None  # (weights, validation tokens) of the best epoch so far
        self.bos = vocab_size  # an input-only id, one past the alphabet
        self.embedding = nn.Embedding(vocab_size + 1, embed_dim)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[self.cell_type]
        # Named after the cell ("lstm" / "gru"): checkpoints from before the GRU variant load as they are.
        setattr(self, self.cell_type, rnn(embed_dim + int(position_features), hidden_dim, n_layers, batch_first=True,
                                          dropout=dropout if n_layers > 1 else 0.0))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, vocab_size)
        # How many train records have each length 0..max_length (`lengths: train` samples from it).
        self.register_buffer("length_counts", torch.zeros(max_length + 1, dtype=torch.int64))

    def init_from_data(self, adata: ad.AnnData) -> None:
        lengths = (adata.obsm["tokens"][split_rows(adata, "train")] != PAD).sum(axis=1)
        self.length_counts.copy_(torch.from_numpy(np.bincount(lengths, minlength=self.hparams.max_length + 1)))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["hyper_parameters"]["modality"] = "sequence"
        # Mid-fit (resume) checkpoints carry what the end-of-fit temperature choice needs.
        if self._best_for_temperature is not None:
            checkpoint[TEMPERATURE_STATE] = {"best_val": self._best_val, "best": self._best_for_temperature}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # checkpoints from before length-matched sampling: no counts (they sample with `lengths: model`)
        checkpoint["state_dict"].setdefault("length_counts", torch.zeros(self.hparams.max_length + 1, dtype=torch.int64))
        state = checkpoint.get(TEMPERATURE_STATE)
        if state is not None:
            self._best_val, self._best_for_temperature = state["best_val"], state["best"]

    @staticmethod
    def steps_per_batch(hparams: dict, adata: ad.AnnData, batch_size: int) -> int:
        """One step per truncated-BPTT chunk of the longest record."""
        longest = int((adata.obsm["tokens"] != PAD).sum(axis=1).max(initial=1))
        return math.ceil((longest + 1) / int(hparams.get("bptt_steps") or longest + 1))

    @staticmethod
    def data_sizes(adata: ad.AnnData) -> dict:
        return {"vocab_size": len(adata.uns["alphabet"]["symbols"]), "max_length": int(adata.obsm["tokens"].shape[1])}

    @staticmethod
    def tensors(adata: ad.AnnData, split) -> dict[str, torch.Tensor]:
        rows = split_rows(adata, split)
        tokens = np.where(observed_mask(adata)[rows], adata.obsm["tokens"][rows], MISSING)
        return {"tokens": torch.from_numpy(tokens.astype(np.int64))}

    # ---- network ------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, state=None, start: int = 0) -> tuple[torch.Tensor, tuple]:
        """Logits over the alphabet for the token after each input position; `start` is the
        position of inputs[:, 0] in the record's input (0 = BOS, i = after token i - 1)."""
        embedded = self.embedding(inputs)
        width = int(self.hparams.get("position_features") or 0)
        if width:
            positions = position_encoding(start, inputs.shape[1], width, inputs.device)
            embedded = torch.cat([embedded, positions.expand(len(inputs), -1, -1)], dim=-1)
        hidden, state = getattr(self, self.cell_type)(embedded, state)
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

    # ---- training: truncated BPTT, manual steps ----------------------------------------
    def configure_optimizers(self):
        # `train` hands its lr_schedule to families that step by hand (`lr_schedule`).
        return with_lr_schedule(super().configure_optimizers(), getattr(self, "lr_schedule", None))

    def training_step(self, batch, batch_idx):
        tokens = batch["tokens"]
        inputs = torch.cat([torch.full_like(tokens[:, :1], self.bos), tokens], dim=1)
        targets = torch.cat([tokens, torch.full_like(tokens[:, :1], PAD)], dim=1)
        targets = targets.masked_fill(~scored_targets(targets), IGNORED)
        # Last scored position of each row: rows leave the batch once their record has ended.
        scored = targets != IGNORED
        last = torch.where(scored, torch.arange(targets.shape[1], device=targets.device), -1).amax(1)
        chunk = int(self.hparams.bptt_steps or targets.shape[1])
        optimizer, state, total, count = self.optimizers(), None, 0.0, 0
        rows = torch.arange(len(tokens), device=tokens.device)
        for start in range(0, targets.shape[1], chunk):
            alive = last[rows] >= start
            if not alive.any():
                break
            if not alive.all():
                rows, state = rows[alive], _select_state(state, alive.nonzero().squeeze(1)) if state is not None else None
            y = targets[rows, start : start + chunk]
            n_scored = int((y != IGNORED).sum())
            logits, state = self(inputs[rows, start : start + chunk], state, start)
            if n_scored:
                loss = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORED, reduction="sum") / n_scored
                self.manual_step(optimizer, loss)
                total, count = total + float(loss.detach()) * n_scored, count + n_scored
            state = _detach_state(state)
        self.add_to_epoch_loss("train_loss", torch.tensor(total / max(count, 1)), len(tokens))

    def validation_step(self, batch, batch_idx):
        loss = super().validation_step(batch, batch_idx)
        self._val_tokens.append((batch["tokens"], float(loss) * len(batch["tokens"])))
        return loss

    def on_validation_epoch_end(self) -> None:
        """Keep the weights and validation rows of each epoch that improves the validation loss
        (computed here: the logged epoch value is not final yet in this hook), for `on_fit_end`."""
        super().on_validation_epoch_end()
        val, self._val_tokens = self._val_tokens, []
        if self.trainer.sanity_checking or not val or self.hparams.temperature != "auto":
            return
        tokens = torch.cat([t for t, _ in val])
        val_loss = sum(weighted for _, weighted in val) / len(tokens)
        if val_loss < self._best_val:
            self._best_val = val_loss
            weights = {k: v.detach().to("cpu", copy=True) for k, v in self.state_dict().items()}
            self._best_for_temperature = (weights, tokens.to("cpu", torch.int8))

    def on_fit_end(self) -> None:
        """Choose the sampling temperature once, with the best epoch's weights (the ones `train`
        writes), then put the current weights back."""
        if self._best_for_temperature is None:
            return
        (weights, tokens), self._best_for_temperature = self._best_for_temperature, None
        current = {k: v.detach().clone() for k, v in self.state_dict().items()}
        self.load_state_dict(weights)
        try:
            self.hparams.sampling_temperature = self.choose_temperature(tokens.numpy())
        finally:
            self.load_state_dict(current)

    def choose_temperature(self, reference: np.ndarray) -> float:
        """The temperature of `TEMPERATURES` whose samples' 3-mer profiles are closest (MMD) to
        those of `reference` records (the validation rows), same random numbers at each."""
        n_residues = self.hparams.vocab_size - GAP  # gap and residues: every content token
        rows = np.random.default_rng(0).permutation(len(reference))[:TEMPERATURE_REFERENCE]
        real = kmer_profiles(reference[np.sort(rows)], n_residues)
        distances = {}
        for temperature in TEMPERATURES:
            drawn = self.sample(TEMPERATURE_DRAWS, torch.Generator().manual_seed(0), temperature=temperature)
            distances[temperature] = profile_mmd(kmer_profiles(drawn, n_residues), real)
        chosen = min(distances, key=distances.get)
        LOG.info("%s: sampling temperature %.1f chosen on %d validation records (3-mer profile MMD %s)",
                 self.family, chosen, len(reference),
                 ", ".join(f"{t:.1f}: {d:.4f}" for t, d in distances.items()))
        return float(chosen)

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
        progress = Progress(LOG, f"{self.family}: filling {len(values):,} records of {values.shape[1]:,} positions",
                            values.size)
        filled = [fill(values[rows], unobserved[rows], progress) for rows in row_chunks(len(values))]
        predicted = np.concatenate(filled) if filled else values
        return keep_observed(values, ~unobserved, predicted)

    def _fill_greedy(self, tokens: np.ndarray, unobserved: np.ndarray, progress: Progress) -> np.ndarray:
        tokens_t = torch.from_numpy(tokens.astype(np.int64)).to(self.device)
        unobserved_t = torch.from_numpy(unobserved).to(self.device)
        current, state, out = torch.full_like(tokens_t[:, :1], self.bos), None, tokens_t.clone()
        for position in range(tokens_t.shape[1]):
            logits, state = self(current, state, position)
            best_content = logits[:, -1, GAP:].argmax(-1) + GAP
            out[:, position] = torch.where(unobserved_t[:, position], best_content, tokens_t[:, position])
            current = out[:, position : position + 1]
            progress.advance(len(tokens))
        return out.cpu().numpy().astype(np.int8)

    def _fill_two_sided(self, tokens: np.ndarray, unobserved: np.ndarray, progress: Progress) -> np.ndarray:
        tokens_t = torch.from_numpy(tokens.astype(np.int64)).to(self.device)
        unobserved_t = torch.from_numpy(unobserved).to(self.device)
        # What the right-hand windows see: unobserved -> MISSING, then the end (pad) after position L-1.
        visible = torch.where(unobserved_t, MISSING, tokens_t)
        visible = torch.cat([visible, torch.full_like(visible[:, :1], PAD)], dim=1)
        current, state, out = torch.full_like(tokens_t[:, :1], self.bos), None, tokens_t.clone()
        for position in range(tokens_t.shape[1]):
            logits, state = self(current, state, position)  # state has read everything left of `position`
            rows = unobserved_t[:, position].nonzero().squeeze(1)
            if len(rows):
                right = visible[rows, position + 1 : position + 1 + self.hparams.impute_window]
                out[rows, position] = self._best_candidate(logits[rows, -1], _select_state(state, rows), right, position)
            current = out[:, position : position + 1]
            progress.advance(len(tokens))
        return out.cpu().numpy().astype(np.int8)

    def _best_candidate(self, logits: torch.Tensor, state, right: torch.Tensor, position: int) -> torch.Tensor:
        """For r rows: the content token c at `position` maximising log p(c | left) +
        log p(right | left, c), `right` (r x w) scored where observed and up to the record's end."""
        candidates = torch.arange(GAP, self.hparams.vocab_size, device=logits.device)
        n_rows, n_cand = len(logits), len(candidates)
        score = logits.log_softmax(-1)[:, candidates]
        window_inputs = torch.cat([candidates.repeat(n_rows)[:, None], right[:, :-1].repeat_interleave(n_cand, 0)], 1)
        window_logits, _ = self(window_inputs, _repeat_state(state, n_cand), position + 1)
        targets = right.repeat_interleave(n_cand, 0)
        log_p = window_logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        right_score = log_p.masked_fill(~scored_targets(targets), 0.0).sum(1).view(n_rows, n_cand)
        return candidates[(score + right_score).argmax(1)]

    @property
    def sampling_temperature(self) -> float:
        """The fixed `temperature`, or the one chosen on validation rows (1 before any choice)."""
        if self.hparams.temperature != "auto":
            return float(self.hparams.temperature)
        return float(self.hparams.get("sampling_temperature") or 1.0)

    @inference
    def sample(self, n: int, generator: torch.Generator, temperature: float | None = None) -> np.ndarray:
        """n x L int8 records by ancestral sampling; MISSING is never drawn, a record stops at its
        first pad and is padded after it; records are cut at L."""
        temperature = self.sampling_temperature if temperature is None else temperature
        length = self.hparams.max_length
        progress = Progress(LOG, f"{self.family}: sampling {n:,} records of {length:,} positions", n * length)
        batches = [self._sample_batch(rows.stop - rows.start, generator, temperature, progress)
                   for rows in row_chunks(n)]
        return np.concatenate(batches) if batches else np.zeros((0, length), dtype=np.int8)

    def _sample_batch(self, n: int, generator: torch.Generator, temperature: float, progress: Progress) -> np.ndarray:
        out = torch.zeros(n, self.hparams.max_length, dtype=torch.int64)
        ended = torch.zeros(n, dtype=torch.bool)
        target = self._target_lengths(n, generator)
        current, state = torch.full((n, 1), self.bos, dtype=torch.int64, device=self.device), None
        for position in range(self.hparams.max_length):
            logits, state = self(current, state, position)
            logits = logits[:, -1].cpu() / temperature
            logits[:, MISSING] = -torch.inf
            if target is not None:  # no end before the drawn length, the end at it
                logits[:, PAD] = torch.where(position < target, -torch.inf, logits[:, PAD])
            drawn = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
            if target is not None:
                drawn = drawn.masked_fill(position >= target, PAD)
            out[:, position] = drawn.masked_fill(ended, PAD)
            ended |= drawn == PAD
            current = out[:, position : position + 1].to(self.device)
            progress.advance(n)
        return out.numpy().astype(np.int8)

    def _target_lengths(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """Lengths drawn from the train records' (`lengths: train`): the model's own end token
        cuts records short (a 200-nt peak set gave records of 8-200 nt, which a classifier spots)."""
        counts = self.length_counts.cpu().double()
        if self.hparams.get("lengths", "model") != "train" or counts.sum() == 0:
            return None
        return torch.multinomial(counts / counts.sum(), n, replacement=True, generator=generator)


def position_encoding(start: int, length: int, width: int, device=None) -> torch.Tensor:
    """1 x length x width sinusoids (sin and cos) of input positions start..start+length-1, at
    periods from 8 to 8,192 positions. A conserved family's composition changes along the record:
    without the position, the 200-nt windows of sampled 16S genes lay 0.076-0.082 (3-mer profile
    distance) from the real windows' centroid at the same place, real held-out genes 0.052-0.065;
    with it 0.061-0.068."""
    positions = torch.arange(start, start + length, device=device, dtype=torch.float32)[:, None]
    periods = torch.logspace(math.log10(8), math.log10(8192), width // 2, device=device)
    angles = 2 * math.pi * positions / periods
    return torch.cat([angles.sin(), angles.cos()], dim=-1)[None]


def scored_targets(targets: torch.Tensor) -> torch.Tensor:
    """True at targets that count: up to and including the first pad, and not MISSING."""
    is_pad = (targets == PAD).long()
    before_end = (is_pad.cumsum(1) - is_pad) == 0
    return before_end & (targets != MISSING)


class LSTMLanguageModel(RecurrentLanguageModel):
    family = "lstm"
    cell_type = "lstm"
    reads_positions = True  # ChIP-seq peaks: a third of the CPU, scores within seed noise (bench/figures.md)


class GRULanguageModel(RecurrentLanguageModel):
    family = "gru"
    cell_type = "gru"


def _select_state(state, rows: torch.Tensor):
    """Rows of a recurrent state (GRU: h; LSTM: (h, c); batch is dimension 1)."""
    if isinstance(state, tuple):
        return tuple(part[:, rows] for part in state)
    return state[:, rows]


def _detach_state(state):
    if isinstance(state, tuple):
        return tuple(part.detach() for part in state)
    return state.detach()


def kmer_profiles(tokens: np.ndarray, n_content: int, k: int = TEMPERATURE_KMER) -> np.ndarray:
    """Per-record k-mer frequencies over the content tokens (gap and residues; windows
    holding pad or MISSING skipped), n x n_content**k, rows summing to 1 (0 for empty records)."""
    content = (tokens >= GAP) & (tokens < GAP + n_content)
    codes = np.where(content, tokens.astype(np.int64) - GAP, 0)
    width = tokens.shape[1] - k + 1
    if width < 1:
        return np.zeros((len(tokens), n_content**k))
    index, valid = np.zeros((len(tokens), width), dtype=np.int64), np.ones((len(tokens), width), dtype=bool)
    for offset in range(k):
        index = index * n_content + codes[:, offset : offset + width]
        valid &= content[:, offset : offset + width]
    profiles = np.zeros((len(tokens), n_content**k))
    rows = np.broadcast_to(np.arange(len(tokens))[:, None], index.shape)
    np.add.at(profiles, (rows[valid], index[valid]), 1.0)
    return profiles / np.maximum(profiles.sum(1, keepdims=True), 1.0)


def profile_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Biased squared MMD with a Gaussian kernel at the median pairwise distance of the pooled rows."""
    pooled = np.vstack([x, y])
    norms = (pooled**2).sum(1)
    squared = np.maximum(norms[:, None] + norms[None, :] - 2 * pooled @ pooled.T, 0.0)
    bandwidth = np.median(squared[squared > 0]) if (squared > 0).any() else 1.0
    kernel = np.exp(-squared / bandwidth)
    n = len(x)
    return float(kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean())


def _repeat_state(state, times: int):
    """Each row of a recurrent state repeated `times` times in place (row-major, as repeat_interleave)."""
    if isinstance(state, tuple):
        return tuple(part.repeat_interleave(times, 1) for part in state)
    return state.repeat_interleave(times, 1)
