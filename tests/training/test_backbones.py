"""Backbone registry, embeddings, local weight files; ViT-x against timm's ViT."""

import pytest
import torch
import torch.nn.functional as F
from icfrr_fast.training.backbones import create_backbone, is_backbone, list_backbones
from icfrr_fast.training.vitx import ViTX, cross_attention, vitx_tokens


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_backbone("icfrr_vit_tiny").eval()


def test_registry():
    assert {"icfrr_vit_tiny", "icfrr_vit_small32"} <= set(list_backbones())
    assert is_backbone("icfrr_vit_tiny") and is_backbone("vit_base_patch16_224") and not is_backbone("no_such_net")
    with pytest.raises(ValueError, match="name must be a registered backbone"):
        create_backbone("no_such_net")
    with pytest.raises(TypeError, match="name"):
        create_backbone(3)


def test_vit_embedding_is_mean_of_patch_tokens_after_norm(tiny):
    x = torch.randn(3, 3, 32, 32)
    tokens = tiny.net.forward_features(x)  # (B, 1 + 16, C), final norm applied
    assert tokens.shape == (3, 17, 32) and tiny.num_prefix_tokens == 1
    raw = tokens[:, 1:].mean(dim=1)
    assert torch.allclose(tiny(x, normalize=False), raw, atol=1e-6)
    assert torch.allclose(tiny(x), F.normalize(raw, dim=-1), atol=1e-6)
    assert torch.allclose(tiny(x).norm(dim=1), torch.ones(3))


def test_vit_with_registers_excludes_all_prefix_tokens():
    bb = create_backbone("icfrr_vit_tiny", reg_tokens=2).eval()
    x = torch.randn(2, 3, 32, 32)
    assert bb.num_prefix_tokens == 3
    assert torch.allclose(bb(x, normalize=False), bb.net.forward_features(x)[:, 3:].mean(1), atol=1e-6)


def test_cnn_uses_global_pooling():
    bb = create_backbone("test_resnet").eval()
    x = torch.randn(2, 3, 64, 64)
    fmap = bb.net.forward_features(x)
    assert fmap.dim() == 4
    assert torch.allclose(bb(x, normalize=False), fmap.mean(dim=(2, 3)), atol=1e-5)
    assert bb.embed_dim == fmap.shape[1]


def test_weights_round_trip(tmp_path, tiny):
    from safetensors.torch import save_file

    x = torch.randn(2, 3, 32, 32)
    ref = tiny(x)
    sd = tiny.net.state_dict()
    torch.save(sd, tmp_path / "w.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pt")
    torch.save({"model": {f"backbone.net.{k}": v for k, v in sd.items()} | {"classifier.weight": torch.zeros(3, 32)}},
               tmp_path / "run.pth")
    save_file(sd, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "ddp.pt", "run.pth", "w.safetensors"):
        torch.manual_seed(123)  # a different random init, overwritten by the file
        bb = create_backbone("icfrr_vit_tiny", weights=tmp_path / name).eval()
        assert torch.equal(bb(x), ref), name


def _export_jax_npz(net, path) -> None:
    """Write a timm ViT in the original JAX ViT ``.npz`` layout (the format of Google's released checkpoints)."""
    import numpy as np

    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    D = net.embed_dim
    H = net.blocks[0].attn.num_heads
    w = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0), "embedding/bias":
         sd["patch_embed.proj.bias"], "cls": sd["cls_token"], "Transformer/posembed_input/pos_embedding":
         sd["pos_embed"], "Transformer/encoder_norm/scale": sd["norm.weight"],
         "Transformer/encoder_norm/bias": sd["norm.bias"]}
    for i in range(len(net.blocks)):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        qkv_w, qkv_b = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            w[f"{p}MultiHeadDotProductAttention_1/{n}/kernel"] = qkv_w[j * D:(j + 1) * D].T.reshape(D, H, D // H)
            w[f"{p}MultiHeadDotProductAttention_1/{n}/bias"] = qkv_b[j * D:(j + 1) * D].reshape(H, D // H)
        w[f"{p}MultiHeadDotProductAttention_1/out/kernel"] = \
            sd[b + "attn.proj.weight"].reshape(D, H, D // H).transpose(1, 2, 0)
        w[f"{p}MultiHeadDotProductAttention_1/out/bias"] = sd[b + "attn.proj.bias"]
        for ln, n in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            w[f"{p}{ln}/scale"], w[f"{p}{ln}/bias"] = sd[b + n + ".weight"], sd[b + n + ".bias"]
        for r in range(2):
            w[f"{p}MlpBlock_3/Dense_{r}/kernel"] = sd[b + f"mlp.fc{r + 1}.weight"].T
            w[f"{p}MlpBlock_3/Dense_{r}/bias"] = sd[b + f"mlp.fc{r + 1}.bias"]
    np.savez(path, **w)


def test_weights_from_jax_npz(tmp_path, tiny):
    _export_jax_npz(tiny.net, tmp_path / "vit.npz")
    torch.manual_seed(321)
    bb = create_backbone("icfrr_vit_tiny", weights=tmp_path / "vit.npz").eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(bb(x), tiny(x), rtol=1e-5, atol=1e-6)


def test_weights_errors(tmp_path, tiny):
    sd = tiny.net.state_dict()
    with pytest.raises(FileNotFoundError, match="weights"):
        create_backbone("icfrr_vit_tiny", weights=tmp_path / "missing.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="weights must be"):
        create_backbone("icfrr_vit_tiny", weights=tmp_path / "w.onnx")
    bad = dict(sd)
    bad["blocks.0.mlp.fc1.weight"] = torch.zeros(5, 5)
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match="shape mismatch"):
        create_backbone("icfrr_vit_tiny", weights=tmp_path / "shape.pth")
    part = {k: v for k, v in sd.items() if not k.startswith("blocks.1.")}
    torch.save(part, tmp_path / "part.pth")
    with pytest.raises(ValueError, match="missing keys"):
        create_backbone("icfrr_vit_tiny", weights=tmp_path / "part.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only"):
        create_backbone("icfrr_vit_tiny", weights=tmp_path / "evil.pth")
    (tmp_path / "w.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="npz"):
        create_backbone("test_resnet", weights=tmp_path / "w.npz")
    import numpy as np

    np.savez(tmp_path / "empty.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="empty.npz"):
        create_backbone("icfrr_vit_tiny", weights=tmp_path / "empty.npz")


# -- ViT-x -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"qk_norm": True, "init_values": 0.1, "reg_tokens": 2},
                                    {"class_token": False, "global_pool": "avg", "fc_norm": False}],
                         ids=["plain", "qknorm-layerscale-registers", "no-class-token"])
def test_vitx_on_one_image_equals_timm_vit(kwargs):
    torch.manual_seed(0)
    bb = create_backbone("icfrr_vit_tiny", **kwargs).eval()
    x = torch.randn(3, 3, 32, 32)
    ref = bb.net.forward_features(x)  # timm's own forward, same weights
    streams = vitx_tokens(bb.net, x, x)
    for name, t in streams.items():
        torch.testing.assert_close(t, ref, rtol=1e-5, atol=1e-5, msg=f"stream {name}")
    vx = ViTX(bb)
    torch.testing.assert_close(vx(x), bb(x))
    for name, e in vx(x, x).items():
        torch.testing.assert_close(e, bb(x), rtol=1e-5, atol=1e-5, msg=f"stream {name}")


def test_vitx_pairs_self_streams_are_plain_vit_cross_streams_mix():
    torch.manual_seed(0)
    bb = create_backbone("icfrr_vit_tiny").eval()
    a, b = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    s = vitx_tokens(bb.net, a, b)
    torch.testing.assert_close(s["a"], bb.net.forward_features(a), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s["b"], bb.net.forward_features(b), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(s["ab"], s["a"], atol=1e-3) and not torch.allclose(s["ba"], s["b"], atol=1e-3)
    # the A->B stream depends on B
    s2 = vitx_tokens(bb.net, a, torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(s2["a"], s["a"])
    assert not torch.allclose(s2["ab"], s["ab"], atol=1e-4)
    # gradients reach the shared weights through the cross streams alone
    bb.train()
    vitx_tokens(bb.net, a, b)["ab"].sum().backward()
    assert bb.net.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_cross_attention_equals_self_attention_when_kv_is_q():
    bb = create_backbone("icfrr_vit_tiny").eval()
    attn = bb.net.blocks[1].attn
    x = torch.randn(2, 17, 32)
    torch.testing.assert_close(cross_attention(attn, x, x), attn(x), rtol=1e-5, atol=1e-6)
    y = torch.randn(2, 9, 32)  # keys/values may have another length
    assert cross_attention(attn, x, y).shape == (2, 17, 32)


def test_vitx_rejects_non_vit():
    with pytest.raises(TypeError, match="VisionTransformer"):
        ViTX(create_backbone("test_resnet"))
    bb = create_backbone("icfrr_vit_tiny")
    with pytest.raises(ValueError, match="same shape"):
        vitx_tokens(bb.net, torch.zeros(2, 3, 32, 32), torch.zeros(1, 3, 32, 32))


def test_model_argument_checks():
    from icfrr_fast.training.model import RetrievalModel
    from icfrr_fast.training.train import fit

    with pytest.raises(TypeError, match="backbone must be a Backbone"):
        RetrievalModel("icfrr_vit_tiny", 3)
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        RetrievalModel(create_backbone("icfrr_vit_tiny"), -1)
    with pytest.raises(TypeError, match="ViT-x needs a timm VisionTransformer"):
        RetrievalModel(create_backbone("test_resnet"), 3, vitx=True)
    m = RetrievalModel(create_backbone("icfrr_vit_tiny"), 3)
    with pytest.raises(ValueError, match="semantic head"):
        m(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32), mixed=torch.zeros(4, 3, 32, 32))
    out = m(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32))
    assert out["logits"].shape == (4, 3) and out["embedding"].shape == (4, 32)
    with pytest.raises(TypeError, match="cfg must be a Config"):
        fit({"model": {}})
