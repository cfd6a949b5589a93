"""BERT's configuration (transformers' field names), the named sizes, and FLOPs per token.

Kept apart from the modules so that the run directory, export and metrics can speak
about a model without building one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from preprocess.dataset import DatasetInfo


@dataclass
class BertConfig:
    """transformers' BERT configuration fields (same names, so config.json maps 1:1)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # other config.json keys, kept on export

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act {self.hidden_act!r}: BERT uses exact 'gelu'")

    @classmethod
    def named(cls, size: str, **overrides: Any) -> BertConfig:
        if size not in SIZES:
            raise ValueError(f"unknown model size {size!r}; choose from {', '.join(SIZES)}")
        return cls(**{**SIZES[size], **overrides})

    @classmethod
    def for_dataset(cls, size: str, info: DatasetInfo, **overrides: Any) -> BertConfig:
        """A named size with the vocabulary size and positions of a preprocessed dataset.

        The vocabulary is padded to a multiple of 8 for tensor-core-friendly matmuls (the
        extra rows are never produced by the data), positions cover at least 512.
        """
        return cls.named(size, vocab_size=(info.vocab_size + 7) // 8 * 8,
                         max_position_embeddings=max(512, info.max_seq_length), **overrides)

    SHAPE = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings", "type_vocab_size")  # what a checkpoint's tensors depend on

    def shape(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.SHAPE}

    def describe_shape(self) -> str:
        """E.g. ``tiny (hidden 128, 2 layers, 2 heads, FFN 512, vocabulary 3000, 512 positions)``."""
        named = [n for n, dims in SIZES.items() if all(getattr(self, k) == v for k, v in dims.items())]
        dims = (f"hidden {self.hidden_size}, {self.num_hidden_layers} layers, {self.num_attention_heads} heads, "
                f"FFN {self.intermediate_size}, vocabulary {self.vocab_size}, {self.max_position_embeddings} "
                f"positions")
        return f"{named[0]} ({dims})" if named else f"({dims})"

    def to_hf_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        return {**self.extra, **d, "model_type": "bert", "architectures": ["BertForPreTraining"]}

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> BertConfig:
        names = {f.name for f in fields(cls)} - {"extra"}
        ignored = {"model_type", "architectures", "transformers_version", "torch_dtype", "dtype"}
        return cls(**{k: v for k, v in d.items() if k in names},
                   extra={k: v for k, v in d.items() if k not in names and k not in ignored})


SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def training_flops(c: BertConfig, tokens: int, attention_pairs: int, predictions: int) -> float:
    """Training FLOPs (forward + backward = 3x forward, matmuls only) counted on real work only.

    ``tokens``: real tokens; ``attention_pairs``: the sum over sequences of length^2 (each
    sequence attends within itself, however it is padded or packed); ``predictions``: real
    masked positions. Per layer: 2 (4 H^2 + 2 H I) per token (QKV, output, FFN) and 4 H per
    attention pair (QK^T and AV); the MLM head 2 H^2 + 2 H V per prediction.
    """
    h, i, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    per_token = L * 2 * (4 * h * h + 2 * h * i)
    return 3.0 * (tokens * per_token + attention_pairs * L * 4 * h + predictions * (2 * h * h + 2 * h * c.vocab_size))


def flops_per_token(c: BertConfig, seq: int, predictions_per_seq: int) -> float:
    """Training FLOPs per token of full-length rows of ``seq`` tokens (what :func:`training_flops`
    gives for them, per token; for synthetic benchmarks).

    Per layer and token: 24 H^2 (QKV, output, FFN with I = 4H in general 2*(4H^2 + 2HI))
    plus attention 4 S H; the MLM head on the masked fraction: 2 H^2 + 2 H V.
    """
    return training_flops(c, seq, seq * seq, predictions_per_seq) / seq

