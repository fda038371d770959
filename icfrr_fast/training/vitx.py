"""ViT-x: a timm ViT run as four weight-shared streams per block, for a pair of images (A, B).

Every block runs, with the block's own modules and weights (nothing is copied or forked from timm):

* self-attention of A: ``a <- a + Attn(n(a), n(a))``, and of B: ``b <- b + Attn(n(b), n(b))``;
* cross-attention A->B: ``ab <- ab + Attn(q = n(ab), kv = n(b))`` (A's queries over B's keys and values at the same
  depth), and B->A: ``ba <- ba + Attn(q = n(ba), kv = n(a))``;
* then each stream its residual MLP: ``s <- s + MLP(n2(s))``,

where ``n = block.norm1``, ``n2 = block.norm2``, ``Attn(q, kv) = proj(softmax(W_q q (W_k kv)^T / sqrt(d_h)) W_v kv)``
with W_q, W_k, W_v the slices of the block's fused qkv projection, and layer scale / drop path as in the block. The
streams start from the embedded tokens (``ab`` from A's, ``ba`` from B's) and end with the final norm. When A = B
all four streams equal the plain ViT, and the self streams always do, so features for retrieval come from the
ordinary single-image forward (``Backbone``); the cross streams only shape training (cross-attention between the
domains, as in cross-modal ViTs for sketch-based retrieval, e.g. Chaudhuri et al., "CrossATNet", 2021, and
Sain et al., "XModalViT", BMVC 2021), optionally pulled into the self streams by a distillation loss
(:mod:`icfrr_fast.training.losses.distillation`).

Supported: timm ``VisionTransformer`` with the standard ``Block`` and ``Attention`` (any depth, width, heads, class
token or not, registers, qk-norm, layer scale, gated attention). Other block types raise ``TypeError``.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ViTX", "vitx_tokens", "cross_attention", "check_vitx_compatible"]

STREAMS = ("a", "b", "ab", "ba")


def check_vitx_compatible(vit: nn.Module) -> None:
    """Raise ``TypeError`` unless ``vit`` is a timm VisionTransformer made of standard Blocks/Attention."""
    from timm.layers import Attention
    from timm.models.vision_transformer import Block, VisionTransformer

    if not isinstance(vit, VisionTransformer):
        raise TypeError(f"ViT-x needs a timm VisionTransformer backbone; got {type(vit).__name__}")
    for i, blk in enumerate(vit.blocks):
        if type(blk) is not Block or type(blk.attn) is not Attention:
            raise TypeError(f"ViT-x supports timm's standard Block/Attention; block {i} is {type(blk).__name__} "
                            f"with {type(blk.attn).__name__}")


def cross_attention(attn: nn.Module, x_q: Tensor, x_kv: Tensor) -> Tensor:
    """timm ``Attention`` with queries from ``x_q`` and keys/values from ``x_kv`` (same weights as self-attention).

    Args:
        attn: a timm ``Attention`` module (fused ``qkv`` projection).
        x_q: (B, N_q, C) normalised query tokens.
        x_kv: (B, N_kv, C) normalised key/value tokens.

    Returns:
        (B, N_q, C_out): ``proj(softmax(q k^T / sqrt(d_h)) v)``; equals ``attn(x_q)`` when ``x_kv is x_q``.
    """
    B, Nq, _ = x_q.shape
    Nk = x_kv.shape[1]
    H, hd = attn.num_heads, attn.head_dim
    D = H * hd
    w, b = attn.qkv.weight, attn.qkv.bias
    q = F.linear(x_q, w[:D], None if b is None else b[:D]).reshape(B, Nq, H, hd).transpose(1, 2)
    kv = F.linear(x_kv, w[D:], None if b is None else b[D:]).reshape(B, Nk, 2, H, hd).permute(2, 0, 3, 1, 4)
    k, v = kv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    x = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    x = attn.norm(x.transpose(1, 2).reshape(B, Nq, D))
    gate = getattr(attn, "gate", None)
    if gate is not None:
        x = x * gate(x_q).sigmoid()
    return attn.proj_drop(attn.proj(x))


def _vitx_block(blk: nn.Module, a: Tensor, b: Tensor, ab: Tensor, ba: Tensor):
    """One block, four streams; the self streams and the cross streams are each run as one batched call."""
    n = a.shape[0]
    na, nb = blk.norm1(a), blk.norm1(b)
    self_out = blk.attn(torch.cat([na, nb]))
    cross_out = cross_attention(blk.attn, torch.cat([blk.norm1(ab), blk.norm1(ba)]), torch.cat([nb, na]))
    x = torch.cat([a, b, ab, ba]) + blk.drop_path1(blk.ls1(torch.cat([self_out, cross_out])))
    x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return x[:n], x[n:2 * n], x[2 * n:3 * n], x[3 * n:]


def _embed_tokens(vit: nn.Module, images: Tensor) -> Tensor:
    x = vit.patch_embed(images)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    return vit.norm_pre(x)


def vitx_tokens(vit: nn.Module, images_a: Tensor, images_b: Tensor) -> Dict[str, Tensor]:
    """Run the four streams of ViT-x over a batch of image pairs.

    Args:
        vit: timm VisionTransformer (see :func:`check_vitx_compatible`).
        images_a: (B, 3, H, W) images A (e.g. sketches).
        images_b: (B, 3, H, W) images B (e.g. photos), paired with A row by row.

    Returns:
        dict ``{"a", "b", "ab", "ba"}`` of (B, N, C) tokens after the final norm.
    """
    if images_a.shape != images_b.shape:
        raise ValueError(f"images_a and images_b must have the same shape; got {tuple(images_a.shape)} and "
                         f"{tuple(images_b.shape)}")
    n = images_a.shape[0]
    tokens = _embed_tokens(vit, torch.cat([images_a, images_b]))
    a, b = tokens[:n], tokens[n:]
    ab, ba = a, b
    for blk in vit.blocks:
        a, b, ab, ba = _vitx_block(blk, a, b, ab, ba)
    out = vit.norm(torch.cat([a, b, ab, ba]))
    return dict(zip(STREAMS, out.split(n)))


class ViTX(nn.Module):
    """Thin module over :func:`vitx_tokens` and a :class:`~icfrr_fast.training.backbones.Backbone` (shares its
    parameters; holds none of its own).

    ``forward(a)`` is the backbone's single-image embedding; ``forward(a, b)`` returns the four streams' embeddings
    (patch-token means, L2-normalised unless ``normalize=False``).
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        check_vitx_compatible(backbone.net)
        self.backbone = backbone

    def forward(self, images_a: Tensor, images_b: Tensor = None, normalize: bool = True):
        if images_b is None:
            return self.backbone(images_a, normalize=normalize)
        toks = vitx_tokens(self.backbone.net, images_a, images_b)
        out = {k: self.backbone.pool(t) for k, t in toks.items()}
        return {k: F.normalize(v, dim=-1) for k, v in out.items()} if normalize else out
