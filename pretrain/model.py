"""BERT for pre-training (MLM + NSP), exactly BERT, in plain PyTorch.

Post-LayerNorm encoder, exact (erf) GELU, token + position + segment embeddings,
LayerNorm eps 1e-12, dropout where BERT has it, an MLM head (dense, GELU,
LayerNorm, decoder tied to the word embeddings, bias) and an NSP head on the
tanh-pooled [CLS]. Module and parameter names are transformers' own
(``bert.encoder.layer.N.attention.self.query`` ...), so a transformers
``BertForPreTraining`` state dict loads with ``strict=True``.

Differences in *how*, not *what*:

* attention is one call through :mod:`pretrain.attention` (fused kernels), which also keeps
  the sequences of a packed row apart;
* a row may hold several sequences (packed: :mod:`pretrain.data`): each has its own
  position ids, token types, [CLS] (``cls_positions``, for NSP) and masked positions;
* the MLM head runs only on the masked positions, (B x max_predictions) rows,
  not (B x S);
* losses are also returned as sums, for a trainer that normalises over a whole global batch;
* activation checkpointing is switched on from outside (:func:`set_activation_checkpointing`);
* weights are initialised in one place, :func:`init_weights`, which also
  materialises a model built on the meta device.

No distributed or DeepSpeed import here: the engine wraps this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from pretrain.attention import Sequences, attention, boundary
from pretrain.model_config import SIZES, BertConfig, flops_per_token

__all__ = ["SIZES", "BertConfig", "BertForPreTraining", "BertModel", "build_model", "flops_per_token",
           "init_weights", "set_activation_checkpointing"]

IGNORE_INDEX = -100


class BertEmbeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))  # (B, S, H)


class BertSelfAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.num_heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout_p = c.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, seqs: Sequences) -> torch.Tensor:
        # One (H -> 3H) matmul instead of three: the parameters keep transformers' names.
        w = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        q, k, v = F.linear(x, w, bias).chunk(3, dim=-1)  # each (B, S, H)
        b, s, h = q.shape
        heads = lambda t: t.view(b, s, self.num_heads, h // self.num_heads)  # noqa: E731 (B, S, nh, hs)
        y = attention(heads(q), heads(k), heads(v), seqs, self.dropout_p if self.training else 0.0)
        return y.reshape(b, s, h)  # (B, S, H)


class BertOutput(nn.Module):
    """Project a sub-layer's output back to the hidden size, then dropout, residual, LayerNorm.

    Both the attention block (``attention.output``) and the feed-forward block (``output``)
    end with it; only the input width differs.
    """

    def __init__(self, c: BertConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(y)) + x)


class BertAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertOutput(c, c.hidden_size)

    def forward(self, x: torch.Tensor, seqs: Sequences) -> torch.Tensor:
        return self.output(self.self(x, seqs), x)


class BertIntermediate(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertOutput(c, c.intermediate_size)

    def forward(self, x: torch.Tensor, seqs: Sequences) -> torch.Tensor:
        a = self.attention(x, seqs)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))
        self.checkpointed: frozenset[int] = frozenset()  # set by set_activation_checkpointing

    def forward(self, x: torch.Tensor, seqs: Sequences) -> torch.Tensor:
        for i, layer in enumerate(self.layer):
            if i in self.checkpointed and torch.is_grad_enabled():
                x = checkpoint(layer, x, seqs, use_reentrant=False)
            else:
                x = layer(x, seqs)
        return x


class BertPooler(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(cls))  # (N, H) from each sequence's [CLS]


class BertModel(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.config = c
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.pooler = BertPooler(c)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        sequence_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        cls_positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) ids -> last hidden states (B, S, H) and the pooled [CLS] of every sequence.

        Plain rows: ``attention_mask`` (B, S), 1 for real tokens, or None for a batch without
        padding; the pooled output is (B, H). Packed rows (the collator's layout,
        :class:`pretrain.data.Collator`): ``position_ids``, ``sequence_ids`` (B, S), ``cu_seqlens``
        and ``cls_positions`` (B, K); the pooled output is (B * K, H), one per sequence slot.
        """
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        seqs = boundary(x, self.config.hidden_size // self.config.num_attention_heads, attention_mask, sequence_ids,
                        cu_seqlens)
        x = self.encoder(x, seqs)  # (B, S, H)
        if cls_positions is None:
            return x, self.pooler(x[:, 0])
        b, s, h = x.shape
        flat = (cls_positions + torch.arange(b, device=x.device)[:, None] * s).reshape(-1)
        return x, self.pooler(x.reshape(b * s, h).index_select(0, flat))  # (B * K, H)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(c)
        # weight tied to the word embeddings, bias to ``self.bias`` (both as in transformers)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class BertPreTrainingHeads(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(c)
        self.seq_relationship = nn.Linear(c.hidden_size, 2)


@dataclass
class PreTrainingOutput:
    loss: torch.Tensor | None
    mlm_loss: torch.Tensor | None  # means over this batch's masked positions / sequences
    nsp_loss: torch.Tensor | None
    mlm_logits: torch.Tensor  # (B * P, V): one row per prediction slot, padding slots included
    nsp_logits: torch.Tensor  # (B, 2), or (B * K, 2) for packed rows
    mlm_loss_sum: torch.Tensor | None = None  # sums, for a normaliser over more than this batch
    nsp_loss_sum: torch.Tensor | None = None
    mlm_correct: torch.Tensor | None = None  # counts, for accuracy
    mlm_total: torch.Tensor | None = None
    nsp_correct: torch.Tensor | None = None
    nsp_total: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None  # (B, S, H)


class BertForPreTraining(nn.Module):
    """BERT with MLM and NSP heads. ``model.bert(...)`` is the bare encoder."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.tie_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.cls.predictions.decoder.bias = self.cls.predictions.bias

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        masked_lm_positions: torch.Tensor | None = None,
        masked_lm_labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        sequence_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        cls_positions: torch.Tensor | None = None,
    ) -> PreTrainingOutput:
        """Losses and logits for a batch.

        input_ids, token_type_ids, attention_mask: (B, S). masked_lm_positions and
        masked_lm_labels: (B, P), padded with position 0 and label -100 (the
        preprocess shards' columns, padded per batch). next_sentence_label: (B,),
        0 = IsNext, 1 = random. Packed rows (see :meth:`BertModel.forward`): positions are
        within the row, ``next_sentence_label`` is (B, K) with -100 in empty slots. The MLM
        head runs on the B x P prediction slots (the loss and counts over the real ones);
        without positions it runs on every position (for inspection).
        """
        hidden, pooled = self.bert(input_ids, token_type_ids, attention_mask, position_ids, sequence_ids, cu_seqlens,
                                   cls_positions)
        nsp_logits = self.cls.seq_relationship(pooled)
        if masked_lm_positions is None:
            mlm_logits = self.cls.predictions(hidden)  # (B, S, V)
            return PreTrainingOutput(None, None, None, mlm_logits, nsp_logits, last_hidden_state=hidden)

        # Every (B x P) prediction slot, padding included (position 0, label -100, ignored by the loss and
        # the counts): static shapes, no boolean mask, so no host synchronisation.
        b, p = masked_lm_positions.shape
        flat = (masked_lm_positions + torch.arange(b, device=hidden.device)[:, None] * hidden.shape[1]).reshape(-1)
        rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat)  # (B * P, H)
        mlm_logits = self.cls.predictions(rows)  # (B * P, V)

        out = PreTrainingOutput(None, None, None, mlm_logits, nsp_logits, last_hidden_state=hidden)
        if masked_lm_labels is not None:
            out.mlm_loss_sum, out.mlm_correct, out.mlm_total = _summed(mlm_logits, masked_lm_labels.reshape(-1))
            out.mlm_loss = out.mlm_loss_sum / out.mlm_total.clamp(min=1)
            out.loss = out.mlm_loss
        if next_sentence_label is not None:
            out.nsp_loss_sum, out.nsp_correct, out.nsp_total = _summed(nsp_logits, next_sentence_label.reshape(-1))
            out.nsp_loss = out.nsp_loss_sum / out.nsp_total.clamp(min=1)
            out.loss = out.nsp_loss if out.loss is None else out.loss + out.nsp_loss
        return out


def _summed(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy (fp32), correct predictions and labelled slots over the slots not -100."""
    real = labels != IGNORE_INDEX
    loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, ((logits.argmax(-1) == labels) & real).sum(), real.sum()


def init_weights(model: nn.Module, initializer_range: float = 0.02) -> None:
    """BERT's initialisation, the only place weights are set.

    Linear and embedding weights ~ N(0, initializer_range) (Google's truncated
    normal is within 1e-3 of this in every moment that matters at 0.02); biases 0;
    LayerNorm weight 1, bias 0; the padding row of the word embeddings 0 (as
    transformers does). A model built on the meta device is materialised first, and
    the MLM decoder re-tied to the word embeddings.
    """
    if any(p.is_meta for p in model.parameters()):
        model.to_empty(device=torch.device("cpu"))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, initializer_range)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, initializer_range)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if isinstance(model, BertForPreTraining):
        model.tie_weights()
        nn.init.zeros_(model.cls.predictions.bias)


def build_model(config: BertConfig, device: str | torch.device = "cpu") -> BertForPreTraining:
    """A freshly initialised model, built on the meta device and materialised once."""
    with torch.device("meta"):
        model = BertForPreTraining(config)
    model.to_empty(device=torch.device(device))
    init_weights(model, config.initializer_range)
    return model


def set_activation_checkpointing(model: BertForPreTraining | BertModel, every: int) -> None:
    """Recompute activations in backward for every ``every``-th layer (0: off, 1: all).

    Applied from outside: the layers do not know. Dropout masks are replayed
    exactly (the RNG state is saved), so gradients are unchanged.
    """
    encoder = (model.bert if isinstance(model, BertForPreTraining) else model).encoder
    if every < 0:
        raise ValueError(f"activation checkpointing every {every} layers: must be >= 0")
    encoder.checkpointed = frozenset(range(0, len(encoder.layer), every)) if every else frozenset()
