"""``text_classifier``: text in, ``{label: probability}`` over the classes out.

The text (a form field, the raw body, or JSON ``{"text": ...}``) is lower-cased (option
``lowercase`` [true]), stripped of HTML tags, split into words and punctuation marks, extended
with word n-grams up to ``ngrams`` [1] (joined by a space, as torchtext's ``ngrams_iterator``
does), and looked up in the archive's vocabulary: ``vocab.json`` (token → index), ``vocab.txt``
(one token a line) or a ``source_vocab.pt`` holding a plain dict or list (option
``vocab_file``). Unknown tokens map to ``unk_token`` [``<unk>``] when the vocabulary has it,
and are dropped otherwise.

The model is called the way its signature asks: with two inputs, EmbeddingBag style (all token
ids in one 1-D int64 array, then each text's start offset); with one input, a ``[N, L]`` int64
array padded with ``pad_index`` [0] to the longest text (or cut to ``max_length``). Softmax is
applied unless ``apply_softmax: false``; ``topk`` [all classes] limits the answer. Labels come
from ``index_to_name.json`` or ``synset.txt``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from dms.context import Context
from dms.errors import ArchiveError, InputError
from dms.handlers.base import BaseHandler, request_payload
from dms.handlers.image_classifier import load_labels
from dms.handlers.scores import ranked

_TAG = re.compile(r"<[^>]*>")
_TOKEN = re.compile(r"[\w']+|[^\w\s]")
_VOCAB_FILES = ("vocab.json", "vocab.txt", "source_vocab.pt")


def tokenize(text: str, lowercase: bool = True, ngrams: int = 1) -> list[str]:
    if lowercase:
        text = text.lower()
    words = _TOKEN.findall(_TAG.sub(" ", text))
    tokens = list(words)
    for n in range(2, ngrams + 1):
        tokens.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return tokens


def load_vocabulary(model_dir: Path, name: str | None) -> dict[str, int]:
    candidates = [name] if name else [f for f in _VOCAB_FILES if (model_dir / f).is_file()]
    if not candidates or not (model_dir / candidates[0]).is_file():
        raise ArchiveError(
            f"text_classifier needs a vocabulary in the archive ({name or ' or '.join(_VOCAB_FILES)}); "
            "add it with --extra-files"
        )
    path = model_dir / candidates[0]
    raw: Any
    if path.suffix == ".json":
        raw = json.loads(path.read_text(encoding="utf-8"))
    elif path.suffix == ".txt":
        raw = path.read_text(encoding="utf-8").splitlines()
    else:
        import torch

        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ArchiveError(
                f"{path.name} is not a plain dict or list of tokens ({type(exc).__name__}); a torchtext Vocab cannot "
                "be loaded without unpickling code: save vocab.get_stoi() as vocab.json instead"
            ) from exc
    if isinstance(raw, list):
        return {str(token): index for index, token in enumerate(raw)}
    if isinstance(raw, dict) and all(isinstance(v, int) for v in raw.values()):
        return {str(token): int(index) for token, index in raw.items()}
    raise ArchiveError(f"{path.name} must map tokens to indices (a dict) or list tokens in index order")


class TextClassifierHandler(BaseHandler):
    def initialize(self, context: Context) -> None:
        super().initialize(context)
        opts = self.options
        self.vocabulary = load_vocabulary(self.model_dir, opts.get("vocab_file"))
        self.unknown = self.vocabulary.get(str(opts.get("unk_token", "<unk>")))
        self.lowercase = bool(opts.get("lowercase", True))
        self.ngrams = int(opts.get("ngrams", 1))
        self.pad_index = int(opts.get("pad_index", 0))
        self.max_length = int(opts.get("max_length", 0))
        self.apply_softmax = bool(opts.get("apply_softmax", True))
        self.topk = int(opts.get("topk", 0))
        self.labels = load_labels(self.model_dir)
        self.input_names = [spec.name for spec in self.runtime.inputs]
        if len(self.input_names) not in (1, 2):
            raise ArchiveError(
                f"text_classifier calls a model with one input (padded ids) or two (ids, offsets); this one has "
                f"{len(self.input_names)}"
            )

    def token_ids(self, text: str) -> list[int]:
        ids = []
        for token in tokenize(text, self.lowercase, self.ngrams):
            index = self.vocabulary.get(token, self.unknown)
            if index is not None:
                ids.append(index)
        return ids[: self.max_length] if self.max_length else ids

    def preprocess(self, data: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        texts = [self.token_ids(_text(request_payload(row))) for row in data]
        if len(self.input_names) == 2:
            offsets = np.cumsum([0] + [len(ids) for ids in texts[:-1]], dtype=np.int64)
            flat = np.array([i for ids in texts for i in ids], dtype=np.int64)
            return {self.input_names[0]: flat, self.input_names[1]: offsets}
        width = max(1, max(len(ids) for ids in texts))
        padded = np.full((len(texts), width), self.pad_index, dtype=np.int64)
        for row, ids in enumerate(texts):
            padded[row, : len(ids)] = ids
        return {self.input_names[0]: padded}

    def postprocess(self, outputs: dict[str, np.ndarray]) -> list[Any]:
        return [
            {self.labels.get(index, str(index)): probability for index, probability in row}
            for row in ranked(next(iter(outputs.values())), self.topk or None, self.apply_softmax)
        ]


def _text(payload: Any) -> str:
    if isinstance(payload, bytes | bytearray):
        try:
            return bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"text_classifier expects UTF-8 text: {exc}") from exc
    if isinstance(payload, dict) and isinstance(payload.get("text"), str):
        return str(payload["text"])
    if isinstance(payload, str):
        return payload
    raise InputError(f'text_classifier expects text (or JSON {{"text": ...}}), got {type(payload).__name__}')
