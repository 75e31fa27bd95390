"""The reference the pretrained BERT checkpoints (``minilm``, ``e5``, ``m3e``) are checked against:
Hugging Face's ``transformers.BertModel``, loaded from the same directory, strictly offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from attend.data.tokenization import TextTokenizer
from attend.models.minilm import BertConfig, BertEncoder


def transformers_bert(directory: Path, **options: Any) -> nn.Module:
    """``transformers.BertModel`` from ``directory`` in eval mode, eager attention, no hub access."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        import transformers

        reference = transformers.BertModel.from_pretrained(
            str(directory), local_files_only=True, attn_implementation="eager", **options
        )
    return reference.eval()


def assert_hidden_states_match(directory: Path, tokenizer: TextTokenizer, texts: list[str], shape: BertConfig,
                               atol: float) -> None:  # fmt: skip
    """Our :class:`BertEncoder` from ``directory`` has ``shape`` and gives the reference's last hidden
    states on the real tokens of ``texts`` (a padded batch) within ``atol``."""
    ours = BertEncoder.from_pretrained(directory)
    assert ours.config == shape
    batch = tokenizer.encode(texts)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (~mask.bool()).any(), "the batch must include padding"
    reference = transformers_bert(directory, add_pooling_layer=False)
    with torch.inference_mode():
        hidden = ours(ids, mask)
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(hidden[real], expected[real], atol=atol, rtol=0)
