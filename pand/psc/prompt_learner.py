"""CoOp prompt learner over a frozen open_clip text tower (docs/method.md, "Prompt construction", "Text path").

Token sequence of class ``c`` (context length L, class token position ``end``)::

    [SOS] [ctx_1 ... ctx_n] [tokens of the class string c] [EOS] [PAD ...]

The class string is ``name + "."`` (``prompt_form="coop"``, original CoOp) or the dataset's templated sentence
``template.format(name)`` (``prompt_form="template"``, the PAND seed). The sequence is built by tokenising
``"X X ... X <class string>"`` (n copies of the placeholder ``X``), embedding it with the frozen
``token_embedding`` and keeping two frozen buffers, ``token_prefix = emb[:, :1]`` (SOS) and
``token_suffix = emb[:, 1 + n:]`` (class string, EOS, padding). The only trainable tensor is ``ctx``:
``[n, W]`` shared by all classes, or ``[C, n, W]`` class-specific (``csc``). It is initialised from the word
embeddings of a phrase (``ctx_init``, whose token count must equal n) or from N(0, 0.02^2).
``front`` / ``middle`` positions put the class-name tokens before / between the two context halves as in CoOp.

The text path (:class:`TextEncoder`) replays the tower's own ``encode_text`` on the prompt embeddings:
``x = prompts + positional_embedding[:L]`` -> ``transformer(x, attn_mask=causal mask)`` in the layout the
installed open_clip expects (batch-first when the transformer has a ``batch_first`` attribute, i.e.
open_clip >= 2.26, whose ``Transformer.forward`` transposes itself; sequence-first otherwise) -> ``ln_final``
-> pooling at the EOT token (``argmax`` of the token ids, or the tokenizer's ``eos`` id) -> ``text_projection``
(a Parameter or an ``nn.Linear``) -> L2 normalisation. The sequence is cut after the last EOT token, which is
exact under the causal mask. Supported: every open_clip ``CLIP`` and every
``CustomTextCLIP`` whose text tower is open_clip's standard ``TextTransformer`` (causal mask, no CLS embedding,
no pad mask) with the CLIP BPE tokenizer. Anything else (HF text towers, CoCa, bidirectional towers) raises a
"not supported" :class:`PandError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch
from open_clip.transformer import TextTransformer
from torch import nn

from pand.config.schema import PSCCfg
from pand.errors import PandError

__all__ = ["PromptLearner", "TextEncoder", "CoOpTextModel", "class_strings", "build_coop_text_model"]

PLACEHOLDER = "X"
PROMPT_FORMS = ("template", "coop")
POSITIONS = ("end", "middle", "front")


def class_strings(
    class_names: Sequence[str], prompt_form: str = "template", template: str = "a photo of a {}."
) -> List[str]:
    """The "class tokens" of every class: ``template.format(name)`` or ``name + "."`` (CoOp).

    Args:
        class_names: prompt-ready names, index = label.
        prompt_form: ``template`` (seed default) or ``coop``.
        template: hand-crafted template with one ``{}``.
    """
    if prompt_form not in PROMPT_FORMS:
        raise PandError(f"psc.prompt_form must be one of {', '.join(PROMPT_FORMS)}, got {prompt_form!r}")
    if prompt_form == "coop":
        return [f"{n}." for n in class_names]
    if "{}" not in template:
        raise PandError(f"data.template {template!r} has no '{{}}' placeholder for the class name")
    return [template.format(n) for n in class_names]


@dataclass
class _Tower:
    token_embedding: nn.Module
    positional_embedding: torch.Tensor
    transformer: nn.Module
    ln_final: nn.Module
    text_projection: Any
    attn_mask: Optional[torch.Tensor]
    pool_type: str
    eos_id: Optional[int]
    context_length: int


def _text_tower(clip_model: nn.Module) -> _Tower:
    """The standard CLIP text-tower parts of ``clip_model``, or a "not supported" PandError."""
    name = type(clip_model).__name__
    if hasattr(clip_model, "token_embedding") and hasattr(clip_model, "transformer"):  # open_clip CLIP
        src = clip_model
        pool, eos = getattr(src, "text_pool_type", "argmax"), getattr(src, "text_eos_id", None)
    else:
        src = getattr(clip_model, "text", None)
        if src is None or not isinstance(src, TextTransformer):
            raise PandError(
                f"CoOp prompt learning is not supported for {name} with text tower "
                f"{type(src).__name__ if src is not None else 'None'}: it needs open_clip's standard CLIP text "
                f"transformer (HF text towers and other custom towers are not supported). Use recipe.anchors="
                f"handcrafted or another teacher.arch."
            )
        if getattr(src, "cls_emb", None) is not None or getattr(src, "use_pad_mask", False):
            raise PandError(f"CoOp prompt learning is not supported for {name}: its text tower uses a CLS embedding "
                            f"or a padding mask (CoCa-style), not the standard causal CLIP text transformer.")
        pool, eos = getattr(src, "pool_type", "argmax"), getattr(src, "eos_id", None)
    attn_mask = getattr(src, "attn_mask", None)
    if attn_mask is None:
        raise PandError(f"CoOp prompt learning is not supported for {name}: its text tower has no causal mask.")
    if pool not in ("argmax", "eos"):
        raise PandError(f"CoOp prompt learning is not supported for {name}: text pooling {pool!r} (needs argmax/eos).")
    return _Tower(
        token_embedding=src.token_embedding,
        positional_embedding=src.positional_embedding,
        transformer=src.transformer,
        ln_final=src.ln_final,
        text_projection=src.text_projection,
        attn_mask=attn_mask,
        pool_type=pool,
        eos_id=eos,
        context_length=int(src.positional_embedding.shape[0]),
    )


def _check_tokenizer(tokenizer: Any) -> None:
    if not (hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id") and hasattr(tokenizer, "eot_token_id")):
        raise PandError(
            f"CoOp prompt learning is not supported with tokenizer {type(tokenizer).__name__}: it needs open_clip's "
            f"CLIP BPE tokenizer (SimpleTokenizer with SOS/EOS tokens)."
        )


class PromptLearner(nn.Module):
    """Learnable context vectors + frozen prefix/suffix embeddings (CoOp).

    Args:
        clip_model: frozen open_clip model whose text tower builds the prompts.
        tokenizer: open_clip CLIP tokenizer of that model.
        class_names: names in label order.
        n_ctx: number of context tokens n.
        ctx_init: phrase whose word embeddings initialise ctx (its token count must equal n); None = N(0, 0.02^2).
        csc: class-specific context ``[C, n, W]`` instead of one shared ``[n, W]``.
        class_token_position: ``end`` | ``middle`` | ``front``.
        prompt_form: ``template`` | ``coop`` (see :func:`class_strings`).
        template: data template with ``{}``.
        generator: torch generator for the random init (seeded runs).
        settings: the configuration keys of ``n_ctx`` and ``ctx_init``, named in the errors (Stage PSC's by
            default; PromptKD's PromptSRC teacher passes its own).

    Raises:
        PandError: unsupported tower/tokenizer, a class string too long for the context after n tokens (names
            the class and the limit), a ctx_init whose token count differs from n_ctx, or bad options.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        tokenizer: Any,
        class_names: Sequence[str],
        n_ctx: int = 16,
        ctx_init: Optional[str] = None,
        csc: bool = False,
        class_token_position: str = "end",
        prompt_form: str = "template",
        template: str = "a photo of a {}.",
        generator: Optional[torch.Generator] = None,
        settings: Tuple[str, str] = ("psc.n_ctx", "psc.ctx_init"),
    ):
        super().__init__()
        n_key, init_key = settings
        tower = _text_tower(clip_model)
        _check_tokenizer(tokenizer)
        if class_token_position not in POSITIONS:
            raise PandError(
                f"psc.class_token_position must be one of {', '.join(POSITIONS)}, got {class_token_position!r}"
            )
        if not class_names:
            raise PandError("PromptLearner needs at least one class name")
        n_ctx = int(n_ctx)
        L = tower.context_length
        if n_ctx < 1 or n_ctx > L - 3:
            raise PandError(f"{n_key} must be in [1, {L - 3}] for context length {L}, got {n_ctx}")
        self.class_names = list(class_names)
        self.n_ctx, self.csc, self.ctx_init = n_ctx, bool(csc), ctx_init
        self.class_token_position, self.prompt_form, self.template = class_token_position, prompt_form, template
        self.prompts_text = class_strings(self.class_names, prompt_form, template)
        # tokens that move for front/middle: the bare name for coop ("." stays behind), else the whole sentence
        movable = list(self.class_names) if prompt_form == "coop" else self.prompts_text
        limit = L - 2 - n_ctx
        for name, text in zip(self.class_names, self.prompts_text):
            k = len(tokenizer.encode(text))
            if k > limit:
                raise PandError(
                    f"class {name!r}: its prompt {text!r} is {k} tokens, but the context of {L} tokens leaves only "
                    f"{limit} after SOS, EOS and {n_key}={n_ctx} context tokens. Shorten the class name "
                    f"(data.class_names) or data.template, or lower {n_key}."
                )
        self.name_lens = [len(tokenizer.encode(t)) for t in movable]

        emb_layer = tower.token_embedding
        dtype, device = emb_layer.weight.dtype, emb_layer.weight.device
        width = emb_layer.weight.shape[1]
        with torch.no_grad():
            if ctx_init:
                init_ids = tokenizer.encode(ctx_init)
                if len(init_ids) != n_ctx:
                    raise PandError(
                        f"{init_key}={ctx_init!r} is {len(init_ids)} tokens but {n_key}={n_ctx}; "
                        f"set {n_key}={len(init_ids)} (or pick a phrase of {n_ctx} tokens, or {init_key}=null for "
                        f"a random init)."
                    )
                vec = emb_layer(torch.tensor(init_ids, device=device)).to(dtype)
                ctx = vec.unsqueeze(0).repeat(len(self.class_names), 1, 1) if self.csc else vec
            else:
                shape = (len(self.class_names), n_ctx, width) if self.csc else (n_ctx, width)
                ctx = torch.empty(shape, dtype=dtype).normal_(0.0, 0.02, generator=generator).to(device)
        self.ctx = nn.Parameter(ctx.clone())

        placeholder = " ".join([PLACEHOLDER] * n_ctx)
        tokenized = tokenizer([f"{placeholder} {t}" for t in self.prompts_text]).to(device)
        x_id = tokenizer.encode(PLACEHOLDER)
        if len(x_id) != 1 or not bool((tokenized[:, 1:1 + n_ctx] == x_id[0]).all()):
            raise PandError("the tokenizer does not map the placeholder 'X' to one token; CoOp prompts cannot be built")
        with torch.no_grad():
            embedding = emb_layer(tokenized).to(dtype)
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)  # [C, L]
        self.register_buffer("token_prefix", embedding[:, :1, :].clone(), persistent=False)  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :].clone(), persistent=False)  # class, EOS, pad

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_ctx(self, ctx: torch.Tensor) -> None:
        """Copy stored context vectors into ``ctx`` (shape must match: ``[n, W]`` or ``[C, n, W]``)."""
        if tuple(ctx.shape) != tuple(self.ctx.shape):
            raise PandError(f"stored ctx has shape {tuple(ctx.shape)} but this prompt learner needs "
                            f"{tuple(self.ctx.shape)} "
                            f"(n_ctx, csc, class count and teacher text width must match)")
        with torch.no_grad():
            self.ctx.copy_(ctx.to(self.ctx.device, self.ctx.dtype))

    def forward(self) -> torch.Tensor:
        """Prompt embeddings ``[C, L, W]``."""
        ctx = self.ctx
        C = self.num_classes
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(C, -1, -1)
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.class_token_position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        half = self.n_ctx // 2
        rows = []
        for i, k in enumerate(self.name_lens):
            pre, cls, rest = prefix[i:i + 1], suffix[i:i + 1, :k], suffix[i:i + 1, k:]
            c = ctx[i:i + 1]
            if self.class_token_position == "middle":
                rows.append(torch.cat([pre, c[:, :half], cls, c[:, half:], rest], dim=1))
            else:  # front
                rows.append(torch.cat([pre, cls, c, rest], dim=1))
        return torch.cat(rows, dim=0)


class TextEncoder(nn.Module):
    """The frozen open_clip text path applied to prompt embeddings (not token ids).

    ``forward(prompts [C, L, W], tokenized [C, L]) -> [C, D]`` L2-normalised, in three steps that a caller running
    the transformer blocks itself reuses (PromptKD's deep text prompts,
    :class:`pand.promptkd.promptsrc.DeepPromptTextEncoder`): :meth:`eot_index`, :meth:`embed` (input and causal
    mask), the transformer, :meth:`pool` (``ln_final``, EOT row, projection, normalisation).
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        t = _text_tower(clip_model)
        self.transformer = t.transformer
        self.ln_final = t.ln_final
        self.positional_embedding = t.positional_embedding
        self.text_projection = t.text_projection
        self.register_buffer("attn_mask", t.attn_mask, persistent=False)
        self.pool_type, self.eos_id = t.pool_type, t.eos_id
        # open_clip >= 2.26: Transformer has `batch_first` and transposes itself when it is False -> feed NLD.
        # Older open_clip: no attribute, the module expects LND and the caller permutes.
        self.feed_batch_first = hasattr(self.transformer, "batch_first")

    def train(self, mode: bool = True) -> "TextEncoder":
        """The frozen tower stays in eval mode."""
        self.training = False
        for m in self.children():
            m.eval()
        return self

    def _cast_dtype(self) -> torch.dtype:
        get = getattr(self.transformer, "get_cast_dtype", None)
        return get() if callable(get) else self.positional_embedding.dtype

    def eot_index(self, tokenized: torch.Tensor) -> torch.Tensor:
        """``[C]`` position of each prompt's EOT token in ``tokenized [C, L]`` (the tokenizer's ``eos`` id, or the
        largest token id for ``argmax`` pooling)."""
        if self.pool_type == "eos" and self.eos_id is not None:
            return (tokenized == self.eos_id).int().argmax(dim=-1)
        return tokenized.argmax(dim=-1)

    def embed(self, prompts: torch.Tensor, idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The transformer input ``x = prompts[:, :L'] + positional_embedding[:L']`` (batch-first, in the tower's cast
        dtype) and its causal mask ``[L', L']``, cut after the last EOT (``L' = max(idx) + 1``).

        Under the causal mask no position attends to a later one, so the pooled EOT outputs do not depend on the
        padding after the last EOT: cutting the sequence there is exact and saves most of the compute.
        """
        cast = self._cast_dtype()
        L = min(prompts.shape[1], int(idx.max()) + 1)
        x = prompts[:, :L].to(cast) + self.positional_embedding[:L].to(cast)
        return x, self.attn_mask[:L, :L]

    def pool(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Transformer output ``x [C, L', W]`` (batch-first) -> ``ln_final`` -> the EOT token's row ->
        ``text_projection`` -> L2 normalisation: ``[C, D]`` float32."""
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), idx]
        proj = self.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return torch.nn.functional.normalize(x.float(), dim=-1)

    def forward(self, prompts: torch.Tensor, tokenized: torch.Tensor) -> torch.Tensor:
        idx = self.eot_index(tokenized)
        x, mask = self.embed(prompts, idx)
        if self.feed_batch_first:
            x = self.transformer(x, attn_mask=mask)
        else:  # pragma: no cover - open_clip < 2.26
            x = self.transformer(x.permute(1, 0, 2), attn_mask=mask).permute(1, 0, 2)
        return self.pool(x, idx)


class CoOpTextModel(nn.Module):
    """Prompt learner + frozen text encoder: ``forward() -> [C, D]`` L2-normalised class text features.

    Only ``prompt_learner.ctx`` requires grad (:meth:`trainable_parameters`).
    """

    def __init__(self, prompt_learner: PromptLearner, text_encoder: TextEncoder):
        super().__init__()
        self.prompt_learner = prompt_learner
        self.text_encoder = text_encoder
        for n, p in self.named_parameters():
            p.requires_grad_(n == "prompt_learner.ctx")

    def trainable_parameters(self) -> List[nn.Parameter]:
        return [self.prompt_learner.ctx]

    def train(self, mode: bool = True) -> "CoOpTextModel":
        """``mode`` for the prompt learner; the frozen text encoder always stays in eval mode."""
        super().train(mode)
        self.text_encoder.train(False)
        return self

    def forward(self) -> torch.Tensor:
        return self.text_encoder(self.prompt_learner(), self.prompt_learner.tokenized_prompts)


def build_coop_text_model(
    clip_model: nn.Module,
    tokenizer: Any,
    class_names: Sequence[str],
    psc_cfg: Optional[PSCCfg] = None,
    template: str = "a photo of a {}.",
    seed: int = 0,
    **overrides: Any,
) -> CoOpTextModel:
    """A :class:`CoOpTextModel` from the ``psc`` config section.

    Reads n_ctx, ctx_init, csc, class_token_position and prompt_form.

    Args:
        clip_model: the teacher's open_clip model (``Teacher.model``).
        tokenizer: its tokenizer (``Teacher.tokenizer``).
        class_names: names in label order.
        psc_cfg: the ``psc`` section (None: the schema's defaults, :class:`pand.config.schema.PSCCfg`); ``overrides``
            win over it.
        template: data template for ``prompt_form=template``.
        seed: seed of the random ctx init.
    """
    keys = ("n_ctx", "ctx_init", "csc", "class_token_position", "prompt_form")
    section = PSCCfg() if psc_cfg is None else psc_cfg
    opts = {k: getattr(section, k) for k in keys}
    opts.update({k: v for k, v in overrides.items() if k in keys})
    gen = torch.Generator().manual_seed(int(seed))
    learner = PromptLearner(clip_model, tokenizer, class_names, template=template, generator=gen,
                            n_ctx=int(opts["n_ctx"]), ctx_init=opts["ctx_init"] or None, csc=bool(opts["csc"]),
                            class_token_position=str(opts["class_token_position"]),
                            prompt_form=str(opts["prompt_form"]))
    return CoOpTextModel(learner, TextEncoder(clip_model))
