"""``fit(cfg)``: build data, model, optimizer and logs from a :class:`~icfrr_fast.training.config.Config`, then
alternate :func:`~icfrr_fast.training.engine.train_one_epoch` and validation.

Outputs in ``train.output_dir``: ``config.yaml`` (resolved configuration), ``last.pth`` (full checkpoint, every
epoch and every ``save_every_steps``), ``best.pth`` (model weights with the best ``eval.best_metric``),
``metrics.csv``, ``metrics.png`` (validation over the epochs, :mod:`.plots`) and ``tensorboard/``. ``train.resume: auto`` continues from ``last.pth`` exactly where it stopped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from .backbones import LOADS_OWN_WEIGHTS, create_backbone
from .checkpoint import load_checkpoint, restore_rng, save_checkpoint
from .class_embeddings import class_embedding_matrix, read_class_embeddings
from .config import Config, save_config
from .data import build_splits, eval_loader, train_loader
from .data.benchmarks import RetrievalSplits
from .distributed import DistContext, barrier, init_distributed, shutdown_distributed
from .engine import LoopState, evaluate, train_one_epoch
from .model import RetrievalModel
from .objective import Objective
from .optim import build_optimizer, build_scheduler
from .run_log import RunLog

__all__ = ["fit", "resolve_amp", "build_model", "build_eval_loaders", "load_model"]

#: per-step records kept in memory (and returned by ``fit``); metrics.csv holds the whole run
HISTORY_LIMIT = 10_000


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """"auto" -> bfloat16 on CUDA (when supported), None (full precision) elsewhere; "bf16"/"fp16"/"none" as named.

    Raises:
        ValueError: fp16 off CUDA, or an unknown value.
    """
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("train.amp: fp16 needs a CUDA device (use bf16 or none on CPU)")
        return torch.float16
    if amp == "none":
        return None
    raise ValueError(f"train.amp must be auto, bf16, fp16 or none; got {amp!r}")


def _backbone(cfg: Config):
    kwargs: Dict[str, Any] = {}
    if cfg.model.img_size is not None:
        kwargs["img_size"] = cfg.model.img_size
    if cfg.model.drop_path:
        kwargs["drop_path_rate"] = cfg.model.drop_path
    backbone = create_backbone(cfg.model.backbone, weights=cfg.model.weights, **kwargs)
    if cfg.model.freeze:
        backbone.freeze(cfg.model.freeze)
    return backbone


def _class_embeddings(cfg: Config, splits: RetrievalSplits) -> Optional[torch.Tensor]:
    if not (cfg.loss.semantic > 0 or cfg.loss.mixture > 0):
        return None
    table = read_class_embeddings(cfg.loss.class_embeddings)
    matrix, _ = class_embedding_matrix(table, splits.train.classes, exclude=splits.query.classes)
    return matrix


def build_model(cfg: Config, num_classes: int, semantic_dim: Optional[int] = None) -> RetrievalModel:
    """The backbone (``model.*``) with a classifier when a classification loss is on."""
    uses_classifier = cfg.loss.ce > 0 or (cfg.model.vitx and cfg.loss.cross_ce > 0) or \
        (cfg.loss.distill > 0 and cfg.loss.distill_form == "kl")
    return RetrievalModel(_backbone(cfg), num_classes if uses_classifier else 0, semantic_dim=semantic_dim,
                          vitx=cfg.model.vitx)


def build_eval_loaders(cfg: Config, splits: RetrievalSplits, backbone) -> Tuple:
    """(query loader, gallery loader) with the evaluation transform of ``backbone``."""
    size = backbone.input_size[1:]
    kw = dict(size=size, mean=backbone.mean, std=backbone.std, batch_size=cfg.data.eval_batch_size,
              num_workers=cfg.data.num_workers)
    return eval_loader(splits.query, **kw), eval_loader(splits.gallery, **kw)


def load_model(checkpoint: str, map_location="cpu") -> Tuple[RetrievalModel, Config]:
    """Rebuild a trained model (and its configuration) from ``last.pth`` or ``best.pth``."""
    ck = load_checkpoint(checkpoint)
    cfg = Config.from_dict(ck["config"], validate=False)
    cfg.model.weights = None
    state = ck["model"]
    n_cls = state["classifier.weight"].shape[0] if "classifier.weight" in state else 0
    sem = state["semantic_head.weight"].shape[0] if "semantic_head.weight" in state else None
    model = RetrievalModel(_backbone(cfg), n_cls, semantic_dim=sem, vitx=cfg.model.vitx)
    model.load_state_dict(state)
    return model.to(map_location), cfg


def _metric_kwargs(cfg: Config) -> Dict[str, Any]:
    e = cfg.eval
    return dict(k_g=e.k_g, k_q=e.k_q, beta=e.beta, iters=e.iters, semantics=e.semantics, map_at=tuple(e.map_at),
                precision_at=tuple(e.precision_at), chunk_size=e.chunk_size)


def _plot(csv_path: Path, png: Path, title: str) -> None:
    """Redraw ``metrics.png`` (skipped with a note when matplotlib is missing: it must not stop a run)."""
    from .plots import plot_validation

    try:
        plot_validation(csv_path, png, title)
    except ImportError as e:  # pragma: no cover - depends on the environment
        print(f"icfrr-fast train: note: no metrics.png ({e}; pip install matplotlib)", flush=True)


def fit(cfg: Config) -> Dict[str, Any]:
    """Train (and validate) as configured; see the module docstring for outputs.

    Returns:
        dict with ``output_dir``, ``history`` (per optimizer step, the last ``HISTORY_LIMIT``: epoch, step, loss
        and its parts, lr),
        ``metrics`` (last validation), ``best`` and ``position``.
    """
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a Config; got {type(cfg).__name__}")
    cfg.validate()
    ctx = init_distributed(cfg.train.device)
    try:
        return _fit(cfg, ctx)
    finally:
        shutdown_distributed(ctx)


def _fit(cfg: Config, ctx: DistContext) -> Dict[str, Any]:
    out_dir = Path(cfg.train.output_dir)
    device = ctx.device
    amp_dtype = resolve_amp(cfg.train.amp, device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)  # identical initialisation on every rank

    if ctx.is_main:  # the main rank writes generated data (toy set) first
        splits = build_splits(cfg.data)
    barrier(ctx)
    if not ctx.is_main:
        splits = build_splits(cfg.data)
    class_emb = _class_embeddings(cfg, splits)
    model = build_model(cfg, len(splits.train.classes), None if class_emb is None else class_emb.shape[1]).to(device)
    backbone = model.backbone
    size = backbone.input_size[1:]
    loader = train_loader(splits.train, size=size, mean=backbone.mean, std=backbone.std,
                          sketch_domains=cfg.data.sketch_domains, classes_per_batch=cfg.data.classes_per_batch,
                          pairs_per_class=cfg.data.pairs_per_class, batches_per_epoch=cfg.data.batches_per_epoch,
                          query_domain=splits.query_domain, seed=cfg.train.seed, rank=ctx.rank,
                          world_size=ctx.world_size, num_workers=cfg.data.num_workers)
    sampler = loader.batch_sampler
    steps_per_epoch = math.ceil(sampler.batches_per_epoch / cfg.train.accum_steps)
    total_steps = cfg.train.epochs * steps_per_epoch
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, total_steps, round(cfg.optim.warmup_epochs * steps_per_epoch),
                                cfg.optim.min_lr_ratio)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    objective = Objective(cfg.loss, class_emb).to(device)

    state = LoopState()
    best: Dict[str, Any] = {"metric": cfg.eval.best_metric}
    metrics: Dict[str, float] = {}
    resume = cfg.train.resume
    if resume == "auto":
        resume = str(out_dir / "last.pth") if (out_dir / "last.pth").is_file() else None
    if resume:
        ck = load_checkpoint(resume)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        pos = ck["position"]
        state.epoch, state.batch, state.step = int(pos["epoch"]), int(pos["batch"]), int(pos["step"])
        best = dict(ck.get("best") or best)
        metrics = dict(ck.get("metrics") or {})
        restore_rng(ck["rng"])
    elif ctx.distributed:
        torch.manual_seed(cfg.train.seed + 1_000_003 * ctx.rank)  # distinct loss noise per rank

    net = model
    if ctx.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    log = RunLog(out_dir, tensorboard=cfg.train.tensorboard, enabled=ctx.is_main)
    if ctx.is_main:
        save_config(cfg, out_dir / "config.yaml")
        if cfg.model.weights is None and not cfg.model.backbone.startswith("icfrr_") and \
                cfg.model.backbone not in LOADS_OWN_WEIGHTS:
            print(f"icfrr-fast train: note: model.weights is none, so {cfg.model.backbone} starts from a random "
                  f"initialisation (give a local .pth/.safetensors/.npz file to fine-tune pretrained weights)",
                  flush=True)
        print(f"icfrr-fast train: {splits.description}; {len(splits.train)} training images, "
              f"{len(splits.query)} queries, {len(splits.gallery)} gallery; {steps_per_epoch} steps/epoch on "
              f"{device}{f' x {ctx.world_size} ranks' if ctx.distributed else ''}", flush=True)
    q_loader = g_loader = None
    if ctx.is_main:
        q_loader, g_loader = build_eval_loaders(cfg, splits, backbone)

    def save_last():
        if ctx.is_main:
            save_checkpoint(out_dir / "last.pth", model=model, optimizer=optimizer, scheduler=scheduler,
                            scaler=scaler, position=state.position(), config=cfg.to_dict(), metrics=metrics,
                            best=best)

    def validate():
        nonlocal metrics, best
        if ctx.is_main:
            metrics = evaluate(model, q_loader, g_loader, device=device, amp_dtype=amp_dtype,
                               progress=cfg.train.progress, **_metric_kwargs(cfg))
            log.log("val", metrics, step=state.step, epoch=state.epoch)
            _plot(log.path, out_dir / "metrics.png", f"{cfg.model.backbone} on {cfg.data.benchmark}")
            name = cfg.eval.best_metric
            if name not in metrics:
                raise ValueError(f"eval.best_metric {name!r} is not reported; choose one of "
                                 f"{', '.join(k for k in metrics if '/' in k)}")
            shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("base/", "icfrr/"))}
            print(f"validation after epoch {state.epoch} (step {state.step}): {shown}", flush=True)
            if best.get("value") is None or metrics[name] > best["value"]:
                best = {"metric": name, "value": metrics[name], "step": state.step, "epoch": state.epoch}
                save_checkpoint(out_dir / "best.pth", model=model, position=state.position(),
                                config=cfg.to_dict(), metrics=metrics, best=best)
        barrier(ctx)

    def on_step(st: LoopState, values: Dict[str, float]) -> None:
        st.history.append({"epoch": st.epoch, "step": st.step, **values})
        if len(st.history) > HISTORY_LIMIT:  # the CSV keeps everything; memory keeps the recent steps
            del st.history[:len(st.history) - HISTORY_LIMIT]
        if st.step % cfg.train.log_every == 0 or st.step == 1:
            log.log("train", values, step=st.step, epoch=st.epoch)
        if cfg.train.save_every_steps and st.step % cfg.train.save_every_steps == 0:
            save_last()

    if cfg.eval.at_start and not resume:
        validate()
    stopped = False
    while state.epoch < cfg.train.epochs and not stopped:
        sampler.set_epoch(state.epoch, state.batch)
        epoch_before = state.epoch
        stopped = train_one_epoch(
            net, loader, objective, optimizer, scheduler, state, device=device, total_steps=total_steps,
            accum_steps=cfg.train.accum_steps, amp_dtype=amp_dtype, scaler=scaler, grad_clip=cfg.optim.grad_clip,
            max_steps=cfg.train.max_steps, progress=cfg.train.progress and ctx.is_main, on_step=on_step,
            mixup_alpha=cfg.loss.mixup_alpha, mixup_cross_max=cfg.loss.mixup_cross_max,
            mixup_ramp=cfg.loss.mixup_ramp)
        if state.epoch > epoch_before:  # an epoch was completed
            every = cfg.eval.every
            if (every and state.epoch % every == 0) or state.epoch == cfg.train.epochs:
                validate()
        save_last()
    log.close()
    return {"output_dir": str(out_dir), "history": state.history, "metrics": metrics, "best": best,
            "position": state.position()}
