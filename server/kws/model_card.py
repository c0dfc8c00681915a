"""The model card of a keyword spotter: a Markdown file beside the checkpoint with the command that trained it, its
front end, network, data, augmentation and held-out and test figures, written from the checkpoint's info."""

from __future__ import annotations

from typing import Any

from server.kws.augment import AugmentConfig
from server.kws.data import LABELS, TEST_PER_LABEL
from server.kws.model import QUIET_PEAK_DB, KWSConfig
from server.model_card import ModelCard, confusion_section


def kws_card(info: dict[str, Any], config: KWSConfig) -> ModelCard:
    """The card of a keyword-spotter checkpoint (its info and model config)."""
    data, train, metrics = info["data"], info["training"], info["metrics"]
    opts = train["options"]
    fe = config.log_mel
    labels = list(LABELS)
    init = train.get("init")
    command = f"antiphon train kws --steps {train['steps']} --seed {opts['seed']}"
    if data["per_number"] != 250 or data["unknown_words"] != 1500:
        command += f" --per-number {data['per_number']} --unknown-words {data['unknown_words']}"
    accent_share = data.get("accent_share", 0.0)
    context = opts.get("context", 0.0)
    if context != 0.5:
        command += f" --context {context}"
    if accent_share != 0.25:
        command += f" --accent-share {accent_share}"
    speed = tuple(opts.get("speed", AugmentConfig.speed))
    if speed != AugmentConfig.speed:
        command += f" --speed-range {speed[0]:g},{speed[1]:g}"
    hard_renderings = data.get("hard_renderings", 0)
    if hard_renderings:
        command += f" --hard-renderings {hard_renderings}"
    holder_renderings = data.get("holder_renderings", 0)
    if holder_renderings:
        command += f" --holder-renderings {holder_renderings}"
    unknown_share, hard_share = opts.get("unknown_share"), opts.get("hard_share", 0.0)
    if unknown_share is not None:
        command += f" --unknown-share {unknown_share}"
    if hard_share:
        command += f" --hard-share {hard_share}"
    if opts.get("balanced_loss"):
        command += " --balanced-loss"
    mine_share, mine_every, keyword_gap = (
        opts.get("mine_share", 0.0),
        opts.get("mine_every", 500),
        opts.get("keyword_gap", 0.0),
    )
    mine_pool = opts.get("mine_pool", "unknown")
    if mine_share:
        command += f" --mine-share {mine_share}" + (f" --mine-every {mine_every}" if mine_every != 500 else "")
        command += f" --mine-pool {mine_pool}" if mine_pool != "unknown" else ""
    if keyword_gap:
        command += f" --keyword-gap {keyword_gap}"
    for flag in ("voice_renderings", "voice_words", "perturbed_copies"):
        if data.get(flag):
            command += f" --{flag.replace('_', '-')} {data[flag]}"
    if data.get("recorded_unknown"):
        command += " --recorded-unknown"
    if data.get("stamp_unknown"):
        command += " --stamp-unknown"
    if data.get("train_speakers"):
        command += f" --train-speakers {','.join(data['train_speakers'])}"
        if data.get("train_speaker_copies", 1) != 1:
            command += f" --train-speaker-copies {data['train_speaker_copies']}"
    if opts.get("unknown_bias"):
        command += f" --unknown-bias {opts['unknown_bias']:g}"
    if opts.get("real_dev"):
        command += " --real-dev"
    if not init and (config.channels, config.blocks) != (88, 4):
        command += f" --channels {config.channels} --blocks {config.blocks}"
    if opts.get("lr") != 4e-3:
        command += f" --lr {opts['lr']}"
    test_per_label = opts.get("test_per_label", TEST_PER_LABEL)
    if test_per_label != TEST_PER_LABEL:
        command += f" --test-per-label {test_per_label}"
    changed = ""  # what the run changed of the --init checkpoint
    if init:
        command += f" --init {init['file']}"
        if "widened_from" in init:
            command += f" --widen {config.channels}"
            changed = f", widened from {init['widened_from']} to {config.channels} channels"
        if "peak_db_from" in init:
            command += f" --peak-db {config.peak_db:g}"
            changed += f", its clips' peaks moved to {config.peak_db:g} dBFS"
    elif config.peak_db is not None:
        command += f" --peak-db {config.peak_db:g}"
    teachers = train.get("teachers") or []
    if teachers:
        command += f" --teachers {','.join(t['file'] for t in teachers)}"
        if opts.get("distill_weight", 0.5) != 0.5:
            command += f" --distill-weight {opts['distill_weight']:g}"
        if opts.get("distill_temperature", 2.0) != 2.0:
            command += f" --distill-temperature {opts['distill_temperature']:g}"
    started = (
        f"continued from `{init['file']}` (sha256 {init['sha256'][:16]}..., {init['steps']:,} steps, held-out clean "
        f"{init['heldout_clean_accuracy']:.2%}{changed}); "
        if init
        else ""
    )
    hard = (
        f"; {hard_renderings} renderings of each of {data['hard_negatives']} hard negatives (other words that share "
        "a number word's onset, rhyme or a syllable, or hold one inside, and short common words: "
        "`server.kws.data.HARD_NEGATIVES`)"
        if hard_renderings
        else ""
    ) + (
        f"; {holder_renderings} more of each of the {data['holders']} that hold a number word whole and go on "
        "(`server.kws.data.HOLDERS`: sixteen, ninety, sixth, someone...)"
        if holder_renderings
        else ""
    )
    mix = (
        f"{unknown_share if unknown_share is not None else 1 / len(labels):.0%} of the clips of each batch unknown"
        + (f" ({hard_share:.0%} of them hard negatives)" if hard_renderings and hard_share else "")
        + ", the other labels alike"
        + (
            "; the shares' log added to the logits in the loss, so the model's priors stay equal"
            if opts.get("balanced_loss")
            else ""
        )
        + (
            f"; {mine_share:.0%} of the unknown clips mined: drawn in proportion to the model's error on them, every "
            f"{'hard negative' if mine_pool == 'hard' else 'unknown training clip'} heard clean every {mine_every:,} "
            "steps"
            if mine_share
            else ""
        )
    )
    gap_text = f"; after a number word the next word {keyword_gap * 1000:.0f} ms or more later" if keyword_gap else ""
    rows = [
        ("input", "one second of PCM, (1, 16000) float32 in [-1, 1] at 16 kHz (resample 8 kHz and other rates first)"),
        ("labels", ", ".join(labels)),
        (
            "front end (inside the model)",
            f"log-mel: {fe.n_fft}-sample Hann frames every {fe.hop_length} samples, {fe.n_mels} mel bands "
            f"{fe.f_min:g} Hz to {fe.f_max:g} Hz (phone and wide-band audio look alike), each band's mean over the "
            "second subtracted; "
            + (
                f"every clip's peak moved to {config.peak_db:g} dBFS first"
                if config.peak_db is not None
                else f"a clip whose peak is below {QUIET_PEAK_DB:g} dBFS raised to it first"
            ),
        ),
        (
            "network",
            f"DS-CNN: conv 10x4 stride 2 x {config.channels}, {config.blocks} depthwise-separable blocks (the first "
            f"with stride 2), average pooling, linear {config.num_classes}",
        ),
        ("parameters", f"{info['parameters']:,}"),
        (
            "data",
            f"{data['source']}: {data['per_number']} training renderings of each number word and "
            f"{data['unknown_words']:,} other words of the training plays (train voices, speeds, pitches, "
            f"amplitudes); {accent_share:.0%} of the number words spoken as other accents and learners pronounce "
            f"them (espeak-ng phonemes: `server.kws.data.PRONUNCIATIONS`){hard}{_beyond_espeak(data)}",
        ),
        (
            "augmentation",
            f"speed/pitch resampling (x{speed[0]:g} to x{speed[1]:g}), time shift ({context:.0%} of the words "
            f"between parts of other words, as cut from running speech{gap_text}), reverberation, random EQ, "
            "telephone band, white/pink/brown/babble noise at 0-30 dB SNR, gain and clipping, hum; SpecAugment "
            f"{opts['freq_masks']} x {opts['freq_mask']} bands, {opts['time_masks']} x {opts['time_mask']} frames",
        ),
        (
            "training",
            f"{started}{train['steps']:,} steps of {opts['batch_size']} fresh clips ({mix}), AdamW one-cycle peak "
            f"lr {opts['lr']}, label smoothing {opts['label_smoothing']}"
            + (
                f"; {opts['distill_weight']:.0%} of the loss distilled from "
                + " and ".join(f"`{t['file']}` (sha256 {t['sha256'][:16]}...)" for t in teachers)
                + f": the {'mean of their log-probabilities' if len(teachers) > 1 else 'its log-probabilities'} "
                f"on each clip without the masks, at temperature {opts['distill_temperature']:g}"
                if teachers
                else ""
            )
            + (
                f"; then {opts['unknown_bias']:+g} on the unknown logit (the head's bias), before every figure below"
                if opts.get("unknown_bias")
                else ""
            ),
        ),
        ("time", f"{train['wall_time_s'] / 60:.1f} minutes on the CPU, {train['threads']} thread(s)"),
        (
            "held-out voices, clean",
            f"**{metrics['heldout_clean_accuracy']:.2%}** ({data['heldout_clips']} clips: "
            f"{data['heldout_per_label']} of each label)",
        ),
        (
            "held-out voices, augmented",
            f"**{metrics['heldout_noisy_accuracy']:.2%}** (the same clips through the training augmentation, fixed "
            "seed)",
        ),
    ]
    if "test_clean_accuracy" in metrics:
        rows += [
            (
                "test set, clean",
                f"**{metrics['test_clean_accuracy']:.2%}** ({data['test_clips']:,} clips: {test_per_label} of each "
                "label by the held-out voices; their other words read by no training)",
            ),
            ("test set, augmented", f"**{metrics['test_noisy_accuracy']:.2%}**"),
        ]
    real = metrics.get("real_dev")
    if real:
        people = ", ".join(
            f"{k} {v['numbers']:.0%}"
            for k, v in real["speakers"].items()
            if v["numbers"] is not None
            and not k.startswith(("flite-", "festival-"))  # the voices: the next row
            and not v.get("trained_on")
        )
        trained = real.get("trained_on") or []
        left = f"; {', '.join(trained)} trained on, so left out" if trained else ""
        rows += [
            (
                "development set, recordings of people",
                f"**{real['recorded_numbers']:.2%}** of the number words ({people}), "
                f"{real['recorded_unknown']:.2%} of the other words heard as unknown{left} (`server.kws.devset`)",
            ),
            (
                "development set, voices no run trains on",
                f"{real['voices_numbers']:.2%} of the number words, {real['voices_unknown']:.2%} of the hard "
                "negatives heard as unknown (flite rms, festival ked)",
            ),
        ]
    rows.append(("created", info["created"]))
    curve = "\n".join(
        f"| {c['step']:,} | {c['train_batch_accuracy']:.2%} | {c['heldout_clean']:.2%} |" for c in train["curve"]
    )
    sections = [
        ABOUT_THE_FIGURES,
        f"Progress:\n\n| step | training batches (augmented, running) | held-out clean |\n|---|---|---|\n{curve}",
        confusion_section(
            "Confusion on the held-out voices, clean (`antiphon eval kws`), rows true, columns predicted",
            metrics["heldout_clean_confusion"],
            labels,
        ),
        confusion_section("Confusion on the held-out voices, augmented", metrics["heldout_noisy_confusion"], labels),
    ]
    if "test_clean_accuracy" in metrics:
        sections.append(confusion_section("Confusion on the test set, clean", metrics["test_clean_confusion"], labels))
    return ModelCard("Keyword spotter", command, info["antiphon_version"], rows, sections)


def _beyond_espeak(data: dict[str, Any]) -> str:
    """The data row's words on the speech beyond espeak-ng (none for older checkpoints)."""
    parts = []
    if data.get("voice_renderings") or data.get("voice_words"):
        parts.append(
            f"festival and flite voices built from recorded speakers (`server.kws.sources.training_voices()`): "
            f"{data.get('voice_renderings', 0)} renderings of each number word and {data.get('voice_words', 0):,} "
            "other words by each, with their own durations and pitches"
        )
    if data.get("recorded_unknown"):
        parts.append("the recorded people's other words outside the development set (asterisk, ktuberling, klettres)")
    if data.get("stamp_unknown"):
        parts.append("Tux Paint's stamp names read in twelve other languages, as unknown")
    if data.get("train_speakers"):
        copies = data.get("train_speaker_copies", 1)
        times = f", each clip {copies} times" if copies != 1 else ""
        parts.append(f"every word of the recorded development speakers {', '.join(data['train_speakers'])}{times}")
    if data.get("perturbed_copies"):
        parts.append(
            f"{data['perturbed_copies']} perturbed copies of every number-word clip and of those words (vocal tract "
            "length, tempo, pitch, G.711 and GSM, band limits, tight trims, clipping: `server.kws.perturb`)"
        )
    return "; " + "; ".join(parts) if parts else ""


# Below the table: what the figures are worth (the card's lines as they read).
ABOUT_THE_FIGURES = (
    "The held-out voices share neither accent nor variant with the training voices. Real people are not "
    "espeak-ng:\nexpect lower figures on recordings (`antiphon eval kws DIR`). The test set (`antiphon eval kws "
    "--test-per-label N`)\nis the larger sample of the same voices, and its figure is the one to report: with 40 "
    "clips of each label, the\nheld-out figure moves by about a point with the words drawn. Choose between runs by "
    "the development set\n(`benchmarks/kws_devset.py`), not by either."
)
