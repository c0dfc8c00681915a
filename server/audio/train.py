"""Train the WaveNet on espeak-ng speech: random short segments, resumable, data-parallel.

Each step draws ``batch_size`` random segments of ``segment`` samples from the training utterances (training voices
only), with the log-mel frames that condition them and their voice ids, and minimizes the cross-entropy of every
sample's mu-law code given the codes before it. With ``input_noise`` the model reads those codes with Gaussian
noise added, so that it learns to recover from the errors its own sampling makes when it generates. A random 10%
of segments are given the "unseen" voice id 0, which is what a voice outside the training set (every held-out
voice) uses. Under ``torchrun`` every process draws its own segments and gradients are averaged; only rank 0
evaluates, writes and reports. The loop, the budget, the signals and the resume are
:class:`server.training.TrainLoop`'s; the options are :class:`~server.audio.options.AudioTrainOptions`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from server.audio.checkpoint import load_audio_model, save_audio_model
from server.audio.constants import SAMPLE_RATE
from server.audio.data import (
    SegmentSampler,
    Utterance,
    build_utterances,
    data_hash,
    mel_stats,
    voice_table,
)
from server.audio.evaluate import batch_bits_per_sample, bits_per_sample
from server.audio.features import MelFrames
from server.audio.model import WaveNet, WaveNetConfig
from server.audio.options import AudioTrainOptions
from server.device import autocast_dtype, resolve_device
from server.errors import InvalidArgument
from server.model_card import ModelCard, snapshot_of, started_from
from server.provenance import stamp
from server.training import TrainLoop, init_distributed, state_path

log = logging.getLogger(__name__)

UNSEEN_VOICE_RATE = 0.1


class AudioTrainer(TrainLoop):
    model: WaveNet
    loss_name, rate_name, unit, seen_key = "bits", "samples_s", "bits/sample", "samples_seen"

    def __init__(self, opts: AudioTrainOptions) -> None:
        super().__init__()
        opts.validate()
        self.opts: AudioTrainOptions = opts
        self.dist = init_distributed(opts.device)
        self.device = resolve_device(opts.device, self.dist.local_rank)
        self.amp = autocast_dtype(opts.precision, self.device)
        resume = self._read_resume_state() if opts.resume else None
        self.voices = voice_table()
        start: WaveNet | None = None
        if opts.init is not None:
            start, init_voices, init_meta = load_audio_model(opts.init)
            if init_voices != self.voices:
                raise InvalidArgument("init", f"{opts.init.name} has another voice table than this version's")
            heldout = init_meta["metrics"]["heldout_bits_per_sample"]
            self._start_from(opts.init, init_meta, {"heldout_bits_per_sample": heldout})
        base = WaveNetConfig(**{**opts.model, "voices": 1})
        self.train_set = self._utterances("train", opts.lines, opts.number_renderings, base)
        self.heldout = self._utterances("heldout", opts.heldout_lines, opts.heldout_number_renderings, base)
        self.data_sha256 = data_hash(self.train_set)
        if resume is not None:
            if resume["data_sha256"] != self.data_sha256:
                raise InvalidArgument(  # the command line's mistake: exit 2
                    "resume",
                    f"{state_path(opts.out)} was trained on other data; give that run's data flags (--lines, "
                    "--number-renderings, ...), or train afresh without --resume",
                )
            config = WaveNetConfig(**resume["config"])
        elif start is not None:
            config = start.config  # its mel statistics too: the weights expect its normalisation
        else:
            mean, std = mel_stats(self.train_set)
            config = WaveNetConfig(**{**opts.model, "voices": len(voice_table()), "mel_mean": mean, "mel_std": std})
        torch.manual_seed(opts.seed)
        self.rng = np.random.default_rng([opts.seed, self.dist.rank])
        self.model = WaveNet(config).to(self.device)
        if start is not None and resume is None:
            self.model.load_state_dict(start.state_dict())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=opts.lr)
        if resume is not None:
            self._restore_loop_state(resume)
            self._restore_random_state(resume)
        self.ddp: torch.nn.Module = self.model
        if self.dist.world > 1:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        floor = MelFrames(config.n_mels, config.hop).floor
        self.sampler = SegmentSampler(self.train_set, opts.segment, config.hop, config.cond_context, floor)
        heldout_sampler = SegmentSampler(self.heldout, opts.segment, config.hop, config.cond_context, floor)
        self.heldout_batch = heldout_sampler.batch(np.random.default_rng(0), 16)

    def _utterances(self, split: str, lines: int, numbers: int, config: WaveNetConfig) -> list[Utterance]:
        opts = self.opts
        # Every rank renders the same utterances (espeak-ng's output is cached on disk, so the others read it).
        return build_utterances(
            split,
            lines,
            numbers,
            config.n_mels,
            config.hop,
            opts.seed,
            min_samples=opts.segment,
            workers=opts.workers,
            progress=opts.progress and self.dist.main,
        )

    # -- resume -------------------------------------------------------------
    def _save_resume_state(self) -> None:
        random_state = self._random_state()  # on every rank: it gathers them
        if not self.dist.main:
            return
        self._write_resume_state(
            {
                **self._loop_state(),
                "config": self.model.config.to_dict(),
                "data_sha256": self.data_sha256,
                **random_state,
            }
        )

    # -- loop ---------------------------------------------------------------
    def _step(self) -> float:
        """One optimizer step on fresh random segments; returns the loss in bits/sample."""
        opts = self.opts
        t0 = time.monotonic()
        inputs, targets, mel, voice = self.sampler.batch(self.rng, opts.batch_size)
        unseen = torch.from_numpy(self.rng.random(opts.batch_size) < UNSEEN_VOICE_RATE)
        voice = torch.where(unseen, torch.zeros_like(voice), voice)
        if opts.input_noise > 0:  # the past the model reads is noisy, as its own samples are when it generates
            noise = torch.from_numpy(self.rng.normal(0.0, opts.input_noise, inputs.shape)).round().long()
            inputs = (inputs + noise).clamp(0, 255)
        inputs, targets, mel, voice = (t.to(self.device) for t in (inputs, targets, mel, voice))
        self._set_lr()
        with self._autocast():
            logits = self.ddp(inputs, self.model.frame_features(mel, voice))  # (B, T, 256)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return self._descend(loss, opts.grad_clip, targets.numel(), t0)

    def _estimate(self) -> float:
        return batch_bits_per_sample(self.model, self.heldout_batch)

    def _finish(self) -> dict[str, Any]:
        """Exact held-out evaluation over whole utterances, then the checkpoint and its model card."""
        self.model.eval()
        heldout_bits = bits_per_sample(self.model, self.heldout)
        info = {
            "data": {
                "source": "espeak-ng renderings of lines of the training plays and the number words",
                "sha256": self.data_sha256,
                "train_utterances": len(self.train_set),
                "train_seconds": round(sum(u.samples for u in self.train_set) / SAMPLE_RATE, 1),
                "heldout_utterances": len(self.heldout),
                "heldout_seconds": round(sum(u.samples for u in self.heldout) / SAMPLE_RATE, 1),
                "heldout_voices": sorted({u.rendering.voice for u in self.heldout}),
            },
            "training": self._provenance().to_dict(),
            "metrics": {"heldout_bits_per_sample": round(heldout_bits, 4)},
            "init": self.init,
            "mel": MelFrames(self.model.config.n_mels, self.model.config.hop).config.to_dict(),
            "parameters": self.model.num_parameters(),
            **stamp(),
        }
        save_audio_model(self.checkpoint_out, self.model, self.voices, info)
        audio_card(info, self.model.config.to_dict()).write(self.checkpoint_out)
        log.info("held-out %.4f bits/sample; checkpoint %s", heldout_bits, self.checkpoint_out)
        return info


def audio_card(info: dict[str, Any], config: dict[str, Any]) -> ModelCard:
    """The card of a WaveNet checkpoint (its info and model config): data, split, steps, time, device, metrics."""
    train, data, metrics = info["training"], info["data"], info["metrics"]
    opts = train["options"]
    run = f"--steps {opts['steps']}" if opts["steps"] is not None else f"--minutes {opts['minutes']}"
    if opts.get("input_noise"):
        run += f" --input-noise {opts['input_noise']:g}"
    init = info.get("init")
    if init:
        run += f" --init {init['file']} --lr {opts['lr']:g}"
    stacks = config["layers"] // config["cycle"]
    arch = (
        f"{config['layers']} layers ({stacks} x dilations 1..{2 ** (config['cycle'] - 1)}), kernel 2, "
        f"{config['residual_channels']} residual, 2 x {config['gate_channels']} gate, {config['skip_channels']} skip, "
        f"{config['out_channels']} output channels, 256-way mu-law softmax; conditioning: {config['n_mels']} log-mel "
        f"bands every {config['hop']} samples through {config['cond_layers']} kernel-3 convolutions of "
        f"{config['cond_channels']}, plus a voice embedding ({config['voices']} ids)"
    )
    steps = (
        f"{train['steps']:,} of {opts['batch_size']} x {opts['segment']} samples per process, "
        f"{train['processes']} process(es), {train['samples_seen']:,} samples seen"
    )
    seconds = f"{data['train_seconds'] / 60:.1f} minutes at 16 kHz (sha256 {data['sha256'][:16]}...)"
    rows = [
        ("architecture", arch),
        ("parameters", f"{info['parameters']:,}"),
        ("data", f"{data['source']}: {data['train_utterances']:,} utterances, {seconds}"),
        (
            "held out",
            f"{data['heldout_utterances']} utterances ({data['heldout_seconds']:.1f} s) in unseen voices: "
            + ", ".join(data["heldout_voices"]),
        ),
        ("steps", steps),
        ("time", f"{train['wall_time_s'] / 60:.1f} minutes"),
    ]
    if init:
        held_out = f"{init['heldout_bits_per_sample']:.4f} bits per sample"
        rows.append(started_from(init, "samples_seen", "samples", held_out))
    rows += [
        ("device", f"{train['device']}, {train['threads']} threads, {train['precision']}"),
        (
            "held-out NLL (teacher forced)",
            f"**{metrics['heldout_bits_per_sample']:.4f} bits per sample** (8 is chance)",
        ),
        ("created", info["created"]),
    ]
    again = "Score it again with `antiphon eval audio`; render held-out voices with `antiphon eval audio --render DIR`."
    command = f"antiphon train audio {run}"
    return ModelCard("WaveNet", command, info["antiphon_version"], rows, [again], snapshot_of=snapshot_of(opts))
