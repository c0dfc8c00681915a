"""The model card of a text discriminator: a Markdown file beside the checkpoint with the command that trained it,
its architecture, data and test figures, written from the checkpoint's info."""

from __future__ import annotations

from typing import Any

from server.model_card import ModelCard, confusion_section
from server.textdisc.data import CHECK_EVERY, LABELS
from server.textdisc.lexicon import LEXICON_FEATURES
from server.textdisc.model import (
    LEXICON_STATISTICS,
    POSITION_FEATURES,
    POSITIONS,
    SCORER_FEATURES,
    SCORER_SKIP,
    WINDOW_STATISTICS,
)
from server.textdisc.sample_sets import variant_name


def textdisc_card(info: dict[str, Any], config: dict[str, Any]) -> ModelCard:
    """The card of a text discriminator checkpoint (its info and model config)."""
    data, train, metrics = info["data"], info["training"], info["metrics"]
    opts = train["options"]
    tr, te = data["train_samples"], data["test_samples"]
    orders = config.get("ngram_orders", [])
    ngrams = (
        f" + hashed {', '.join(map(str, orders))}-gram embeddings ({config['ngram_buckets']:,} rows each)"
        if orders
        else ""
    )
    scorer = info.get("scorer")
    reference = info.get("reference")
    base = info.get("base")
    scorer_arch = (
        f" + a linear map of the frozen scorer's per-character features ({', '.join(SCORER_FEATURES)}; the "
        f"{config['scorer']['num_layers']} x {config['scorer']['hidden_size']} "
        f"LSTM `{scorer['file']}`, sha256 {scorer['sha256'][:16]}..., {scorer['parameters']:,} parameters, inside "
        "the model)"
        if scorer
        else ""
    )
    lexicon = info.get("lexicon")
    lexicon_arch = (
        f" + a linear map of the lexicon's per-word features ({'; '.join(LEXICON_FEATURES)}; "
        f"{lexicon['words']:,} word hashes of {lexicon['documents']} training documents in a table of "
        f"{lexicon['buckets']:,} bytes; training takes a window's own document off the counts)"
        if lexicon
        else ""
    )
    chars = f"embedding {config['embed_dim']}" if config.get("characters", True) else "no character embedding"
    if config.get("scorer_pooled"):
        assert scorer is not None and base is not None
        width = config.get("band_width", 0.0)
        bands = f" (soft band edges, {width:g} nats wide)" if width else " (hard band edges)"
        lexicon_stats = f"; per word: {', '.join(LEXICON_STATISTICS)}" if config.get("lexicon_documents") else ""
        positions = (
            f"; {', '.join(POSITION_FEATURES)} at {', '.join(POSITIONS)}" if config.get("position_statistics") else ""
        )
        reference_arch = (
            f" and the frozen reference `{reference['file']}` (a {config['reference']['num_layers']} x "
            f"{config['reference']['hidden_size']} LSTM, sha256 {reference['sha256'][:16]}..., "
            f"{reference['parameters']:,} parameters: the same features)"
            if reference
            else ""
        )
        reference_stats = "; the mean and spread of each scorer feature less the reference's" if reference else ""
        arch = (
            f"the frozen discriminator `{base['file']}` (sha256 {base['sha256'][:16]}..., test accuracy "
            f"{base['test_accuracy']:.2%}: {chars}{lexicon_arch}, {len(config['dilations'])} conv1d "
            f"{config['kernel_size']} x {config['channels']}, mean + max pooling) and the frozen scorer "
            f"`{scorer['file']}` (the {config['scorer']['num_layers']} x {config['scorer']['hidden_size']} LSTM, "
            f"sha256 {scorer['sha256'][:16]}..., {scorer['parameters']:,} parameters: per character "
            f"{', '.join(SCORER_FEATURES)}){reference_arch}, its features pooled over the window "
            f"({', '.join(WINDOW_STATISTICS)}{bands}{lexicon_stats}{positions}{reference_stats}, from character "
            f"{config.get('scorer_skip', SCORER_SKIP)} on, standardised); a trained linear head over both, "
            f"{config['num_classes']} outputs"
        )
    else:
        arch = (
            f"{chars}{ngrams}{scorer_arch}{lexicon_arch}, {len(config['dilations'])} conv1d "
            f"{config['kernel_size']} x "
            f"{config['channels']} (dilations {', '.join(map(str, config['dilations']))}, ReLU, residual), "
            f"mean + max pooling, linear {config['num_classes']}"
        )
    groups = "\n".join(f"| {g} | {a:.2%} |" for g, a in metrics["test_by_source"].items())
    corpus = f" --corpus {opts['corpus']}" if opts["corpus"] else ""
    held_out = ", ".join(data["held_out"])
    share = data.get("real_train_share", 0.0)
    real = (
        f"training: the first {share:.1%} of the held-out text ({held_out}; {data['real_train_characters']:,} "
        "characters, cut at a line start), which the scorer never read; test: the rest"
        if share
        else f"training plays; test: {held_out}"
    )
    scorer_opts = f" --scorer {scorer['file']} --pool-windows {opts['pool_windows']}" if scorer else ""
    scorer_opts += "" if config.get("characters", True) else " --no-characters"
    scorer_opts += f" --real-train-share {share:g}" if share else ""
    plays = data.get("real_train_plays", 0.0)
    scorer_opts += f" --real-train-plays {plays:g}" if plays else ""
    scorer_opts += "" if lexicon else " --no-lexicon"
    scorer_opts += f" --base {base['file']}" if base else ""
    scorer_opts += f" --reference {reference['file']}" if reference else ""
    scorer_opts += f" --rank-width {config.get('rank_width', 0.0):g}" if scorer else ""
    if config.get("scorer_pooled"):
        scorer_opts += f" --band-width {config.get('band_width', 0.0):g}"
        scorer_opts += "" if config.get("position_statistics") else " --no-position-statistics"
        scorer_opts += f" --scorer-skip {config.get('scorer_skip', SCORER_SKIP)}"
    frozen = f" + {scorer['parameters']:,} of the frozen scorer" if scorer else ""
    frozen += f" + {reference['parameters']:,} of the frozen reference" if reference else ""
    training = (
        f"{train['steps']:,} steps of {opts['batch_size']} windows (half real) drawn from a fixed pool of "
        f"{data['pool_windows']:,} whose scorer features are computed once"
        if scorer
        else f"{train['steps']:,} steps of {opts['batch_size']} random windows (half real)"
    )

    def described(sample_set: dict[str, Any], plain: str) -> str:
        variants = ", ".join(variant_name(k, p) for k, p in sample_set["variants"])
        prompt = f", each after a {sample_set['prompt']}-character prompt of {plain}" if sample_set["prompt"] else ""
        return (
            f"{len(sample_set['temperatures']) * len(sample_set['variants']) * sample_set['streams']:,} streams x "
            f"{sample_set['length']:,} characters ({sample_set['streams']} per setting{prompt}): temperatures "
            f"{', '.join(f'{t:g}' for t in sample_set['temperatures'])}, each {variants} "
            f"(seed set {sample_set['seed']})"
        )

    command = (
        f"antiphon train textdisc --steps {train['steps']} --seed {opts['seed']}{corpus} "
        f"--batch-size {opts['batch_size']} --train-streams {tr['streams']} --channels {config['channels']} "
        f"--dilations {','.join(map(str, config['dilations']))} --ngrams {','.join(map(str, orders)) or 'none'} "
        f"--ngram-buckets {config['ngram_buckets']}{scorer_opts}"
    )
    question = (
        f": is a window of {info['window']} characters real text or text sampled from the character LSTM "
        f"`{info['generator']['file']}` (sha256 {info['generator']['sha256'][:16]}...)?"
    )
    rows = [
        ("architecture", arch),
        ("parameters", f"{info['parameters']:,} trained{frozen}"),
        ("input", f"character ids (1, {info['window']}) int32 in the text model's vocabulary; labels real, generated"),
        ("real text", f"{data['source']} (sha256 {data['sha256'][:16]}...): {real}"),
        ("generated, train", described(tr, "training text")),
        (
            "generated, test",
            f"{described(te, 'held-out text')}: other seeds, temperatures and top-k / top-p values",
        ),
        ("training", f"{training}, AdamW one-cycle, peak lr {opts['lr']}"),
        ("time", f"{train['wall_time_s']:.1f} s on the CPU, {train['threads']} thread(s)"),
        (
            "memorisation check",
            f"generated windows caught: {metrics['trained_streams_caught']:.2%} of streams it trained on, "
            f"{metrics['unseen_streams_caught']:.2%} of held-back training streams (one in {CHECK_EVERY}, never "
            "trained on)",
        ),
        ("test accuracy", f"**{metrics['test_accuracy']:.2%}** on {data['test_windows']:,} windows, half real"),
        ("created", info["created"]),
    ]
    sections = [
        f"Test accuracy by source:\n\n| source | accuracy |\n|---|---|\n{groups}",
        confusion_section(
            "Confusion matrix on the test windows (`antiphon eval textdisc`), rows true, columns predicted",
            metrics["test_confusion"],
            LABELS,
        ),
    ]
    return ModelCard("Text discriminator", command, info["antiphon_version"], rows, sections, summary_end=question)
