"""Pythia-family GPT-NeoX models built from their published hyperparameters, as Composer models.

Nothing is downloaded: the architecture comes from `transformers.GPTNeoXConfig`, the weights from a
random init, a local Hugging Face model directory, or a midmix/Composer checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from composer.models import ComposerModel
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXLayer

from midmix.data import IGNORE
from midmix.errors import ConfigError

# (hidden size, layers, heads) from the Pythia paper's Table 1 / the models' config.json; the MLP is
# 4× wide. `tiny` is for CPU runs and tests.
_SIZES = {
    "tiny": (64, 2, 4),
    "pythia-14m": (128, 6, 4),
    "pythia-70m": (512, 6, 8),
    "pythia-160m": (768, 12, 12),
    "pythia-410m": (1024, 24, 16),
    "pythia-1b": (2048, 16, 8),
}


def neox_config(arch: str, vocab_size: int | None = None, max_positions: int = 2048) -> GPTNeoXConfig:
    hidden, layers, heads = _SIZES[arch]
    return GPTNeoXConfig(
        vocab_size=vocab_size or 50304,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        hidden_act="gelu",
        rotary_pct=0.25,
        rotary_emb_base=10000,
        max_position_embeddings=max_positions,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
    )


def shifted_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross entropy: position i predicts labels[i + 1]; -100 is not scored.

    The labels are shifted rather than the logits: slicing [B, L, vocab] logits would make autograd
    fill and copy a tensor of that size again in the backward pass."""
    targets = torch.full_like(labels, IGNORE)
    targets[:, :-1] = labels[:, 1:]
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction=reduction)


def labels_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """SFT batches carry masked labels; pretraining batches are scored on every token."""
    return batch["labels"] if "labels" in batch else batch["input_ids"]


class CausalLM(ComposerModel):
    """A Hugging Face causal LM under Composer: batches are {"input_ids", ["labels"], ["source"]}."""

    def __init__(self, model: GPTNeoXForCausalLM) -> None:
        super().__init__()
        self.model = model
        # FSDP2 shards each transformer block separately (Composer reads this from the child module).
        model.fsdp_wrap_fn = lambda module: isinstance(module, GPTNeoXLayer)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        return shifted_loss(outputs, labels_of(batch))

    def get_metrics(self, is_train: bool = False) -> dict[str, Any]:
        return {}  # evaluation runs in midmix's callbacks, not Composer's evaluators


def build_model(arch: str, init_from: str | None, vocab_size: int | None, max_positions: int,
                min_vocab: int) -> CausalLM:
    """The model for a recipe; `min_vocab` is the data's tokenizer vocabulary, which must fit.

    `init_from`: a Hugging Face model directory, a Composer checkpoint file, or a midmix run directory
    (its latest checkpoint)."""
    if init_from is not None and (Path(init_from) / "checkpoints").is_dir():
        init_from = str(Path(init_from) / "checkpoints" / "latest-rank0.pt")
    if init_from is not None and Path(init_from).is_dir():
        if not (Path(init_from) / "config.json").exists():
            raise ConfigError(f"model.init_from: {init_from} has no config.json (not a Hugging Face model directory)")
        model = GPTNeoXForCausalLM.from_pretrained(init_from, local_files_only=True, torch_dtype=torch.float32)
    else:
        model = GPTNeoXForCausalLM(neox_config(arch, vocab_size, max_positions))
    if model.config.vocab_size < min_vocab:
        raise ConfigError(f"model vocabulary {model.config.vocab_size} is smaller than the data's tokenizer "
                          f"({min_vocab}); set model.vocab_size")
    wrapped = CausalLM(model)
    if init_from is not None and not Path(init_from).is_dir():
        load_weights(wrapped, Path(init_from))
    return wrapped


def load_weights(model: CausalLM, checkpoint: Path) -> None:
    """Weights only, from a Composer checkpoint file (`state.model`)."""
    if not checkpoint.exists():
        raise ConfigError(f"model.init_from: {checkpoint} does not exist")
    try:
        obj = torch.load(checkpoint, map_location="cpu", weights_only=False)
        weights = obj["state"]["model"]
    except (KeyError, TypeError, RuntimeError) as e:
        raise ConfigError(f"model.init_from: {checkpoint} is not a Composer checkpoint ({e})") from e
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ConfigError(f"model.init_from: {checkpoint} does not match model.arch "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
