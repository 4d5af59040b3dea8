"""The training loop, on accelerate: one code path for 1 CPU, 1 GPU, DDP, multi-node, FSDP and DeepSpeed.

Determinism is by construction so that a killed-and-resumed run equals an uninterrupted one: the data order
and every per-sample choice derive from ``(seed, epoch, index)`` (:class:`~.data.EpochSampler`); the noise,
timesteps and VAE sample of micro-batch ``k`` on process ``r`` come from a generator seeded with
``(seed, k, r)``; the optimizer, LR scheduler, scaler, EMA, RNG states and the accumulation counter are
restored from the checkpoint; and the data loader skips the micro-batches of the current epoch already done.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UserInputError, one_line
from ..outputs import check_output_dir
from .adapter_model import AdapterTrainingModel, TrainingComponents, load_components, trainable_parameters
from .checkpointing import find_resume_checkpoint, list_checkpoints, read_trainer_state, save_checkpoint
from .config import ConfigError, TrainConfig
from .data import EpochSampler, IdentityPairDataset, TrainCache, _stable_seed, collate_pairs
from .losses import face_weighted_mse, has_face_box, identity_cosine_loss, predicted_clean_latents

logger = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"
_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

__all__ = ["TrainResult", "train"]


@dataclass
class TrainResult:
    adapter_path: Path | None
    global_step: int
    losses: list[float]
    resumed_from: Path | None
    samples_per_second: float
    dataset: dict[str, int]


class _Conditioning:
    """Text-side inputs of a step: empty-prompt embeddings (identity-enhanced) or the captions' (joint)."""

    def __init__(self, comps: TrainingComponents, config: TrainConfig, device: torch.device) -> None:
        self.comps = comps
        self.config = config
        self.device = device
        self.joint = config.train.mode == "joint"
        self.empty = None if self.joint else self._encode([""])

    @torch.no_grad()
    def _encode(self, prompts: list[str]):
        pipe = self.comps.pipe
        if self.comps.is_sdxl:
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            return embeds, pooled
        embeds, _ = pipe.encode_prompt(prompts, self.device, 1, False)
        return embeds, None

    def __call__(self, batch: dict[str, Any], resolution: int):
        n = batch["pixel_values"].shape[0]
        if self.joint:
            embeds, pooled = self._encode(list(batch["caption"]))
        else:
            embeds, pooled = self.empty
            embeds = embeds.expand(n, -1, -1)
            pooled = None if pooled is None else pooled.expand(n, -1)
        embeds = embeds.to(self.comps.weight_dtype)
        if not self.comps.is_sdxl:
            return embeds, None
        # SDXL micro-conditioning: the photo's true size and crop, and the training resolution.
        target = torch.tensor([resolution, resolution]).expand(n, 2)
        time_ids = torch.cat([batch["original_size"], batch["crop_top_left"], target], dim=1)
        added = {
            "text_embeds": pooled.to(self.device, self.comps.weight_dtype),
            "time_ids": time_ids.to(self.device, self.comps.weight_dtype),
        }
        return embeds, added


def loss_terms(
    model,
    comps: TrainingComponents,
    conditioning: _Conditioning,
    batch: dict[str, Any],
    generator,
    config: TrainConfig,
) -> dict[str, torch.Tensor]:
    """The loss of one batch and, when the identity loss is on, its parts: ``{"loss": total}``, plus
    ``"diffusion"`` and ``"identity"`` (unweighted) with ``train.identity_loss_weight > 0``.

    The diffusion term is ``|| target - model(z_t, t, c_id) ||^2`` (paper eq. in section 2); ``generator`` draws
    the VAE sample, the noise and the timesteps. With the identity loss off, ``"loss"`` is that term itself."""
    t, device, vae = config.train, conditioning.device, comps.pipe.vae
    scheduler = comps.noise_scheduler
    pixels = batch["pixel_values"].to(device, next(vae.parameters()).dtype)
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample(generator=generator).float() * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator, device=device)
    if t.noise_offset:
        noise = noise + t.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=generator, device=device)
    timesteps = torch.randint(
        0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator, device=device
    )
    noisy = scheduler.add_noise(latents, noise, timesteps)
    embeds, added = conditioning(batch, config.data.resolution)
    pred = model(
        noisy.to(comps.weight_dtype),
        timesteps,
        embeds,
        batch["ref_pixel_values"].to(device),
        batch["face_embeds"].to(device),
        added,
        text_cross_attention=t.mode == "joint",
    )
    target = (
        scheduler.get_velocity(latents, noise, timesteps)
        if scheduler.config.prediction_type == "v_prediction"
        else noise
    )
    diffusion = face_weighted_mse(pred, target, batch.get("face_box"), t.face_loss_weight)
    if not t.identity_loss_weight:
        return {"loss": diffusion}
    identity = identity_term(comps, noisy, pred, timesteps, pixels, batch.get("face_box"), config)
    return {"loss": diffusion + t.identity_loss_weight * identity, "diffusion": diffusion, "identity": identity}


def identity_term(
    comps: TrainingComponents,
    noisy: torch.Tensor,
    pred: torch.Tensor,
    timesteps: torch.Tensor,
    pixels: torch.Tensor,
    face_boxes: torch.Tensor | None,
    config: TrainConfig,
) -> torch.Tensor:
    """Mean ``1 - cosine(E(decode(x0)), E(target photo))`` over the samples with a face box and a timestep at most
    ``train.identity_loss_max_timestep``; 0 when there are none. ``x0`` is the clean latents the prediction
    implies, decoded by the frozen VAE *with* gradients, so the loss reaches the adapter through the UNet."""
    zero = pred.new_zeros((), dtype=torch.float32)
    if face_boxes is None:
        return zero
    face_boxes = face_boxes.to(pred.device)
    chosen = (timesteps <= config.train.identity_loss_max_timestep) & has_face_box(face_boxes)
    if not bool(chosen.any()):
        return zero
    scheduler, vae = comps.noise_scheduler, comps.pipe.vae
    x0 = predicted_clean_latents(
        noisy[chosen], pred[chosen], timesteps[chosen], scheduler.alphas_cumprod, scheduler.config.prediction_type
    )
    vae_dtype = next(vae.parameters()).dtype
    decoded = vae.decode((x0 / vae.config.scaling_factor).to(vae_dtype)).sample.float()
    boxes = face_boxes[chosen]
    with torch.no_grad():
        target = comps.identity_encoder(pixels[chosen].float(), boxes)
    return identity_cosine_loss(comps.identity_encoder(decoded, boxes), target)


def diffusion_loss(
    model,
    comps: TrainingComponents,
    conditioning: _Conditioning,
    batch: dict[str, Any],
    generator,
    config: TrainConfig,
) -> torch.Tensor:
    """The training loss of one batch (see :func:`loss_terms`)."""
    return loss_terms(model, comps, conditioning, batch, generator, config)["loss"]


def _register_state_hooks(accelerator, model_ref: list) -> None:
    """Checkpoint only the trainable weights (the frozen base model is never copied into checkpoints)."""

    def save_hook(models, weights, output_dir):
        if weights and accelerator.is_main_process:
            model = accelerator.unwrap_model(model_ref[0])
            state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
            save_file(state, str(Path(output_dir) / TRAINABLE_FILE))
        while weights:
            weights.pop()

    def load_hook(models, input_dir):
        path = Path(input_dir) / TRAINABLE_FILE
        if not path.is_file():
            return  # FSDP / DeepSpeed restore the model themselves
        model = accelerator.unwrap_model(model_ref[0])
        state = load_file(str(path))
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        missing, unexpected = trainable - set(state), set(state) - trainable
        if missing or unexpected:
            raise RuntimeError(
                f"checkpoint {input_dir} does not fit this adapter: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]} (was the adapter configuration changed?)"
            )
        model.load_state_dict(state, strict=False)
        while models:
            models.pop()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _make_accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    out = Path(config.output.dir)
    log_with = None
    if config.output.tensorboard:
        try:
            import tensorboard  # noqa: F401

            log_with = "tensorboard"
        except ImportError:
            logger.warning("tensorboard is not installed (pip install 'infinite-id[train]'); no TensorBoard logs")
    return Accelerator(
        gradient_accumulation_steps=config.train.gradient_accumulation_steps,
        mixed_precision=config.train.mixed_precision,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )


def _make_loader(config: TrainConfig, pipe, accelerator, cache, shard_index):
    """``(dataset, sampler, loader)``: the indexed cache with an epoch sampler, or streamed shards (no sampler)."""
    t = config.train
    if shard_index is not None:
        from .shards import StreamingLoader, StreamingPairDataset

        for problem in shard_index.check_files():
            logger.warning("shards: %s; its samples will be skipped", problem)
        dataset = StreamingPairDataset(
            shard_index,
            pipe.feature_extractor,
            t.mode,
            config.data.resolution,
            t.seed,
            t.batch_size,
            config.data.center_crop,
            config.data.random_flip,
            t.id_dropout,
            t.text_dropout,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            num_workers=config.data.num_workers,
            shuffle_buffer=config.data.shuffle_buffer,
        )
        return dataset, None, StreamingLoader(dataset, config.data.num_workers)
    dataset = IdentityPairDataset(
        cache,
        pipe.feature_extractor,
        t.mode,
        config.data.resolution,
        t.seed,
        config.data.center_crop,
        config.data.random_flip,
        t.id_dropout,
        t.text_dropout,
    )
    sampler = EpochSampler(len(dataset), t.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=t.batch_size,
        sampler=sampler,
        collate_fn=collate_pairs,
        num_workers=config.data.num_workers,
        drop_last=True,
    )
    return dataset, sampler, loader


def train(
    config: TrainConfig, step_callback: Callable[[int, float], None] | None = None, accelerator=None
) -> TrainResult:
    """Train an Infinite-ID adapter as ``config`` says; returns where the exported adapter is.

    ``step_callback(global_step, loss)`` runs on every process after each optimizer step (tests use it to
    interrupt a run).
    """
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from ..faces.base import FaceEncoderInfo

    # Everything that can be checked without the model is checked first: a bad run stops in seconds.
    config.validate()
    t, out = config.train, Path(config.output.dir)
    data_source = config.data.shards or config.data.cache
    check_output_dir(out, what="output.dir", command="infinite-id train", is_own=is_train_output, inputs=[data_source],
                     overwrite=None)  # fmt: skip
    if t.mixed_precision == "fp16" and not _has_gpu(accelerator):
        raise ConfigError("train.mixed_precision=fp16 needs a GPU; on a CPU use no (or bf16)")
    accelerator = accelerator or _make_accelerator(config)
    ckpt_root = out / "checkpoints"
    resume_from = find_resume_checkpoint(out, config.output.resume)
    set_seed(t.seed)
    device = accelerator.device

    shard_index = cache = None
    if config.data.shards:  # streamed tar shards (see shards.py) instead of the indexed cache
        from .shards import ShardIndex

        shard_index = ShardIndex.load(config.data.shards)
        face_encoder = FaceEncoderInfo.from_dict(shard_index.info["face_encoder"])
        photos = int(shard_index.info["samples"])
    else:
        cache = TrainCache.load(config.data.cache)
        face_encoder = FaceEncoderInfo.from_dict(cache.info["face_encoder"])
        photos = len(cache.entries)
    boxed = cache.photos_with_face_box if cache is not None else int(shard_index.info.get("photos_with_face_box", 0))
    for option in ("face_loss_weight", "identity_loss_weight"):
        if getattr(t, option) and not boxed:
            raise ConfigError(
                f"train.{option}={getattr(t, option)} needs face boxes, and {data_source} has none: rebuild it "
                "with `infinite-id train-prepare` and a face analyzer (or give face_box in the manifest), or set it "
                "to 0"
            )
    if photos < t.batch_size * accelerator.num_processes:
        raise ConfigError(
            f"{photos} photos cannot fill one batch of {t.batch_size} per process on {accelerator.num_processes} "
            "processes: lower train.batch_size or add data"
        )
    comps = load_components(config, face_encoder, _DTYPES[t.mixed_precision])
    pipe = comps.pipe
    dataset, sampler, loader = _make_loader(config, pipe, accelerator, cache, shard_index)
    model = AdapterTrainingModel(pipe.unet, comps.projection, pipe.image_encoder, config.adapter.clip_layer)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(
        params,
        lr=t.learning_rate,
        betas=(t.adam_beta1, t.adam_beta2),
        weight_decay=t.weight_decay,
        eps=t.adam_epsilon,
    )
    lr_scheduler = get_scheduler(
        t.lr_scheduler,
        optimizer,
        num_warmup_steps=t.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=t.max_steps * accelerator.num_processes,
    )
    pipe.vae.to(device)
    if isinstance(comps.identity_encoder, torch.nn.Module):
        comps.identity_encoder.to(device)
    needs_text = t.mode == "joint" or config.validation.every > 0
    for name in ("text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).to(device)
    if sampler is None:  # shards are split across processes by the dataset itself, not by accelerate
        model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    else:
        model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    model_ref = [model]
    _register_state_hooks(accelerator, model_ref)
    ema = None
    if t.ema.enabled:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=t.ema.decay)
        ema.to(device)
        accelerator.register_for_checkpointing(ema)

    conditioning = _Conditioning(comps, config, device)
    if not needs_text:  # identity-enhanced without validation: the text encoders are done after one call
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                getattr(pipe, name).to("cpu")

    global_step, epoch, micro_in_epoch, micro_total = 0, 0, 0, 0
    if resume_from is not None:
        resume_from, state = _load_checkpoint(accelerator, out, config.output.resume, resume_from)
        global_step, epoch = state["global_step"], state["epoch"]
        micro_in_epoch, micro_total = state["micro_in_epoch"], state["micro_total"]
        if state.get("config", {}).get("train") != dataclasses.asdict(t):
            logger.warning(
                "resuming %s with a changed train section; the run will not match the original", resume_from
            )
        logger.info("resumed from %s at step %d", resume_from, global_step)

    per_epoch = len(loader)
    if per_epoch == 0:
        raise ConfigError(
            f"{dataset.stats()['photos']} photos cannot fill one batch of {t.batch_size} per process on "
            f"{accelerator.num_processes} processes; lower train.batch_size or add data"
        )
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(_dump_yaml(config.to_dict()), encoding="utf-8")
        accelerator.init_trackers("infinite-id", config=_flat_hparams(config))
        stats = dataset.stats()
        logger.info(
            "%d photos, %d identities (%d with a single photo), %d micro-batches per epoch per process, "
            "global batch %d",
            stats["photos"],
            stats["identities"],
            stats["single_photo_identities"],
            per_epoch,
            t.batch_size * accelerator.num_processes * t.gradient_accumulation_steps,
        )

    from .validation import pick_references, render_validation, save_grid, shard_references

    n_refs = config.validation.num_references if config.validation.every else 0
    references = pick_references(cache, n_refs) if cache is not None else shard_references(shard_index, n_refs)

    def run_validation(step: int) -> None:
        if not accelerator.is_main_process:
            return
        with _ema_weights(ema, params, t.ema.use_for_export):
            rows = render_validation(
                pipe, references, config.validation, config.data.resolution, autocast=accelerator.autocast
            )
        grid = save_grid(rows, out / "validation" / f"step-{step:08d}.png")
        for tracker in accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({"validation": grid[None]}, step=step, dataformats="NHWC")

    losses: list[float] = []
    same_photo = dropped = seen = 0
    progress = tqdm(
        total=t.max_steps,
        initial=global_step,
        desc="training",
        unit="step",
        disable=not (config.output.progress_bar and accelerator.is_local_main_process),
        dynamic_ncols=True,
    )
    start, start_step = time.perf_counter(), global_step
    model.train()
    done = global_step >= t.max_steps
    while not done:
        if sampler is None:
            epoch_loader = loader.epoch(epoch, skip=micro_in_epoch)
        else:
            sampler.set_epoch(epoch)
            loader.set_epoch(epoch)  # accelerate re-sets the sampler's epoch to its own iteration count on __iter__
            epoch_loader = accelerator.skip_first_batches(loader, micro_in_epoch) if micro_in_epoch else loader
            if epoch_loader is not loader:
                epoch_loader.set_epoch(epoch)
        for batch in epoch_loader:
            g = torch.Generator(device=device).manual_seed(
                _stable_seed(t.seed, micro_total, accelerator.process_index) % (2**63)
            )
            with accelerator.accumulate(model):
                terms = loss_terms(model, comps, conditioning, batch, g, config)
                loss = terms["loss"]
                accelerator.backward(loss)
                if accelerator.sync_gradients and t.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, t.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro_in_epoch += 1
            micro_total += 1
            seen += batch["pixel_values"].shape[0]
            same_photo += int(batch["same_photo"].sum())
            dropped += int(batch["id_dropped"].sum())
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            if ema is not None:
                ema.step(params)
            loss_value = float(loss.detach())
            losses.append(loss_value)
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
            if global_step % config.output.log_every == 0 or global_step == t.max_steps:
                means = {
                    ("loss" if name == "loss" else f"loss_{name}"): accelerator.gather(value.detach().reshape(1))
                    .mean()
                    .item()
                    for name, value in terms.items()
                }
                accelerator.log(
                    {
                        **means,
                        "lr": lr_scheduler.get_last_lr()[0],
                        "epoch": epoch,
                        "same_photo_fraction": same_photo / max(seen, 1),
                        "id_dropped_fraction": dropped / max(seen, 1),
                    },
                    step=global_step,
                )
            if config.output.checkpoint_every and global_step % config.output.checkpoint_every == 0:
                state = {
                    "global_step": global_step,
                    "epoch": epoch,
                    "micro_in_epoch": micro_in_epoch,
                    "micro_total": micro_total,
                    "config": config.to_dict(),
                }
                save_checkpoint(accelerator, ckpt_root, global_step, state, config.output.keep_checkpoints)
            if config.validation.every and global_step % config.validation.every == 0:
                run_validation(global_step)
                accelerator.wait_for_everyone()
            if step_callback is not None:
                step_callback(global_step, loss_value)
            if global_step >= t.max_steps:
                done = True
                break
        else:
            epoch += 1
            micro_in_epoch = 0
    progress.close()
    elapsed = time.perf_counter() - start
    samples_per_second = (
        (global_step - start_step) * t.batch_size * t.gradient_accumulation_steps * accelerator.num_processes / elapsed
        if elapsed > 0
        else 0.0
    )

    accelerator.wait_for_everyone()
    adapter_path = None
    if accelerator.is_main_process:
        training_info = {
            "mode": t.mode,
            "steps": global_step,
            "base_model": config.model.pretrained,
            "global_batch": t.batch_size * accelerator.num_processes * t.gradient_accumulation_steps,
            "learning_rate": t.learning_rate,
            "id_dropout": t.id_dropout,
            "resolution": config.data.resolution,
            "ema": t.ema.enabled,
            "dataset": dataset.stats(),
            **({"shards": config.data.shards} if shard_index is not None else {"cache": str(config.data.cache)}),
        }
        with _ema_weights(ema, params, t.ema.use_for_export):
            adapter_path = pipe.save_adapter(out / "infinite_id_adapter.safetensors", training=training_info)
        logger.info("adapter written to %s", adapter_path)
    accelerator.end_training()
    return TrainResult(adapter_path, global_step, losses, resume_from, samples_per_second, dataset.stats())


class _ema_weights:
    """Context: swap the EMA weights in (and back out) when EMA is on and wanted."""

    def __init__(self, ema, params, wanted: bool) -> None:
        self.ema, self.params, self.active = ema, params, ema is not None and wanted

    def __enter__(self):
        if self.active:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)

    def __exit__(self, *exc):
        if self.active:
            self.ema.restore(self.params)


def _has_gpu(accelerator) -> bool:
    """Whether this process trains on an accelerator (checked before accelerate's state is created)."""
    if accelerator is not None:
        return accelerator.device.type != "cpu"
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or (mps is not None and mps.is_available())


def is_train_output(folder: Path) -> bool:
    """True when ``folder`` is a training run's output: its ``config.yaml`` is a training configuration as
    :func:`train` writes it (so a folder of the user's own files is never taken for one)."""
    try:
        data = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except FileNotFoundError:  # a run stopped before it wrote its config still has its checkpoints
        return bool(list_checkpoints(folder / "checkpoints"))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    sections = {f.name for f in dataclasses.fields(TrainConfig)}
    return isinstance(data, dict) and set(data) == sections


#: What a damaged checkpoint raises while its files are read (truncated safetensors, pickles or JSON).
_DAMAGED = (OSError, ValueError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError, SafetensorError)


def _load_checkpoint(accelerator, out: Path, resume: str | None, first: Path) -> tuple[Path, dict[str, Any]]:
    """Load ``first`` into ``accelerator``; when resuming automatically and it is damaged (a save cut short by a
    full disk, a copy truncated), fall back to the previous complete checkpoint with a warning."""
    candidates = [first]
    if resume in ("auto", "latest"):
        candidates = list(reversed(list_checkpoints(out / "checkpoints")))
    for i, path in enumerate(candidates):
        try:
            state = read_trainer_state(path)
            accelerator.load_state(str(path))
            return path, state
        except _DAMAGED as exc:
            if i + 1 == len(candidates):
                raise UserInputError(
                    f"checkpoint {path} cannot be read ({one_line(exc)[:300]}): delete it to start over, or set "
                    "output.resume to another checkpoint"
                ) from exc
            logger.warning("checkpoint %s is damaged (%s); resuming from %s instead", path, exc, candidates[i + 1])
    raise AssertionError("unreachable: candidates is never empty")


def _dump_yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _flat_hparams(config: TrainConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix] = value
        elif value is not None:
            flat[prefix] = str(value)

    walk("", config.to_dict())
    return flat


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(Path(output_dir) / "checkpoints")
    return found[-1] if found else None
