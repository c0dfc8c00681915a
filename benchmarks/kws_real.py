"""The keyword spotter on every real-speech set the project has, per speaker and per word, beside PocketSphinx.

The clips are the development set of ``server.kws.devset``: recordings of people from Debian packages (asterisk's
Allison, a TIDIGITS speaker, ktuberling's and klettres' English readers) and the voices built from recorded
speakers that training leaves out (flite rms, festival ked), each clip centred in one second at its own level.
For each checkpoint (or exported ``.tflite`` file) it prints the share of number words recognized and of other
words heard as unknown, per speaker, and the number words per word; PocketSphinx 5 (its en-us model, a grammar of
the ten number words; a dev dependency of this benchmark only, ``pip install pocketsphinx``) hears the same number
clips. A grammar of ten words always answers one of them, so PocketSphinx has no figure for other words.

    python benchmarks/kws_real.py                                     # the committed spotter
    python benchmarks/kws_real.py runs/kws/a.safetensors export/kws.int8.tflite --json
    python benchmarks/kws_real.py --gain -40   # every clip 40 dB quieter, as a distant or badly set microphone
    python benchmarks/kws_real.py --phone     # 8 kHz G.711 and trimmed to the word, as the issue's recordings
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import wave as wavfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.audio.resample import resample  # noqa: E402
from server.data.speech import NUMBER_WORDS  # noqa: E402
from server.kws.data import HOLDERS, LABELS, UNKNOWN_INDEX  # noqa: E402
from server.kws.devset import DevSet, development_set, score, window  # noqa: E402

GRAMMAR = "#JSGF V1.0;\ngrammar numbers;\npublic <number> = " + " | ".join(NUMBER_WORDS) + ";\n"
PAD_S = 0.3  # silence on each side of a clip for PocketSphinx


def spotter_predictions(path: Path, waves: np.ndarray, unknown_bias: float = 0.0) -> np.ndarray:
    """Predicted label indices (N,) of a kws checkpoint or an exported TFLite/ONNX file; ``unknown_bias`` is added
    to a checkpoint's unknown logit first (as ``antiphon train kws --unknown-bias`` folds it into the head)."""
    if unknown_bias and path.suffix != ".safetensors":
        raise SystemExit(f"--unknown-bias needs kws checkpoints (.safetensors), not {path}")
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        predicted = []
        for wave in waves:
            interpreter.set_tensor(inp["index"], wave[None].astype(np.float32))
            interpreter.invoke()
            predicted.append(int(np.argmax(interpreter.get_tensor(out["index"]))))
        return np.asarray(predicted)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.asarray([int(np.argmax(session.run(None, {name: w[None]})[0])) for w in waves])
    from server.kws.checkpoint import load_kws_model
    from server.kws.evaluate import predict_logits

    model, _ = load_kws_model(path)
    logits = predict_logits(model, waves)
    logits[:, UNKNOWN_INDEX] += unknown_bias
    return logits.argmax(axis=1)


def trained_speakers(path: Path) -> list[str]:
    """The development speakers a kws checkpoint trained on (``--train-speakers``); for an exported file, those its
    export's manifest.json records (none where the manifest beside it does not list the file)."""
    if path.suffix != ".safetensors":
        manifest = path.parent / "manifest.json"
        if not manifest.is_file():
            return []
        for entry in json.loads(manifest.read_text(encoding="utf-8")).get("models", {}).values():
            names = {f.get("file") for fmt in entry.get("files", {}).values() for f in fmt.values()}
            if path.name in names:
                return list(entry.get("trained_speakers", []))
        return []
    from server.checkpoint import read_meta

    return list(read_meta(path).get("data", {}).get("train_speakers", []))


def pocketsphinx_hypotheses(waves: Sequence[np.ndarray], grammar: str | None = None) -> list[str]:
    """What PocketSphinx 5 (its en-us model) hears in each clip (float32 at 16 kHz, padded with ``PAD_S`` of
    silence on each side, fed as 16-bit samples): with a JSGF ``grammar``, or with its own language model."""
    from pocketsphinx import Decoder

    if grammar is None:
        decoder = Decoder(samprate=16000, loglevel="FATAL")
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".gram", delete=False) as f:
            f.write(grammar)
        decoder = Decoder(samprate=16000, jsgf=f.name, loglevel="FATAL")
        Path(f.name).unlink()
    pad = np.zeros(int(PAD_S * 16000), dtype=np.int16)
    out = []
    for wave in waves:
        pcm = np.concatenate([pad, (np.clip(wave, -1, 1) * 32767).astype(np.int16), pad])
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        out.append(hyp.hypstr if hyp is not None else "")
    return out


def pocketsphinx_predictions(waves: Sequence[np.ndarray]) -> np.ndarray:
    """PocketSphinx's word (a label index, or -1 for no word) for each clip (N, 16000), with the ten-word grammar."""
    out = []
    for hypothesis in pocketsphinx_hypotheses(waves, GRAMMAR):
        words = hypothesis.split()
        out.append(NUMBER_WORDS.index(words[0]) if words and words[0] in NUMBER_WORDS else -1)
    return np.asarray(out)


def at_gain(waves: np.ndarray, db: float) -> np.ndarray:
    """``waves`` moved by ``db`` decibels, clipped to [-1, 1] and rounded to 16-bit steps."""
    moved = np.clip(waves * np.float32(10 ** (db / 20)), -1, 1)
    return (np.round(moved * 32767) / 32767).astype(np.float32)


def as_phone(waves: np.ndarray) -> np.ndarray:
    """Each clip as the issue's held-back recordings were made: through an 8 kHz G.711 mu-law line, trimmed at
    -30 dB of its peak to the word, and centred again in one second of silence."""
    from server.kws.perturb import g711, trim_to_word

    return np.stack([window(trim_to_word(g711(w))) for w in waves]).astype(np.float32)


def write_wavs(folder: Path, dev: DevSet, trained_on: Sequence[str]) -> int:
    """The people's recordings as the issue's held-back ones are, for the edge client and ``antiphon eval kws``: 8 kHz
    16-bit mono WAV files trimmed at -30 dB of their peak to the word, in the Speech Commands layout
    (``folder/seven/tuxpaint-en-3.wav``; other words under ``unknown``). Returns how many it wrote."""
    from server.kws.perturb import trim_to_word

    written = 0
    for k, clip in enumerate(dev.waves):
        if not dev.recorded[k] or dev.speakers[k] in trained_on:
            continue
        narrow = resample(trim_to_word(clip), 16_000, 8_000)
        path = folder / LABELS[dev.labels[k]] / f"{dev.speakers[k]}-{k}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        with wavfile.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8_000)
            out.writeframes((np.clip(narrow, -1, 1) * 32767).round().astype("<i2").tobytes())
        written += 1
    return written


def espeak_holders(per_word: int = 8, seed: int = 23) -> np.ndarray:
    """Each word of HOLDERS ("sixteen", "ninety", "someone") said ``per_word`` times by espeak-ng's held-out voices
    (accents and variants no training reads; the words themselves are trained on), each centred in one second."""
    from server.data.speech import random_rendering, render_many, trim_silence

    rng = np.random.default_rng(seed)
    items = [(w, random_rendering(rng, "heldout")) for w in HOLDERS for _ in range(per_word)]
    return np.stack([window(trim_silence(a)) for a in render_many(items, workers=2)])


def _print(name: str, r: dict) -> None:
    def pct(v: float | None) -> str:
        return "   -  " if v is None else f"{v:6.1%}"

    print(name)
    print(f"  recordings of people: numbers {pct(r['recorded_numbers'])}  other words as unknown "
          f"{pct(r['recorded_unknown'])}   held-out voices: numbers {pct(r['voices_numbers'])}  other words "
          f"{pct(r['voices_unknown'])}   words holding a number word (of {r['n_holders']}) as unknown "
          f"{pct(r['holders_unknown'])}")  # fmt: skip
    if "espeak_holders_unknown" in r:
        print(f"  espeak-ng's held-out voices, the words holding a number word ({len(HOLDERS)} x 8) as unknown "
              f"{pct(r['espeak_holders_unknown'])}")  # fmt: skip
    for speaker, s in r["speakers"].items():
        mark = "   (trained on: left out of the figures above)" if speaker in r.get("trained_on", []) else ""
        print(f"    {speaker:18s} numbers {pct(s['numbers'])} of {s['n_numbers']:4d}   unknown {pct(s['unknown'])} "
              f"of {s['n_unknown']:4d}{mark}")  # fmt: skip
    print("    per word: " + "  ".join(f"{w} {pct(v).strip()}" for w, v in r["words"].items()))
    print("    number-word misses:", r["number_misses"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path, default=[ROOT / "models/kws/kws_dscnn.safetensors"],
                        help="kws checkpoints or exported .tflite/.onnx files")  # fmt: skip
    parser.add_argument("--no-pocketsphinx", action="store_true", help="leave PocketSphinx out")
    parser.add_argument("--json", action="store_true", help="one JSON object per model")
    parser.add_argument("--unknown-bias", type=lambda v: [float(b) for b in v.split(",")], default=[0.0],
                        metavar="B[,B...]", help="add each B to the checkpoints' unknown logit, a row per model "
                        "and B: choose a bias on these clips, then train with --unknown-bias; a list that starts "
                        "below 0 goes after an equals sign, --unknown-bias=-0.5,0 (default: 0)")  # fmt: skip
    parser.add_argument("--gain", type=float, default=0.0, metavar="DB",
                        help="move every clip's level by DB decibels first, clipped to full scale and rounded to "
                        "16-bit samples as a WAV file holds them (default: 0, each clip at its own level)")  # fmt: skip
    parser.add_argument("--phone", action="store_true",
                        help="every clip through an 8 kHz G.711 line and trimmed to the word first, as the issue's "
                        "held-back recordings are (after --gain)")  # fmt: skip
    parser.add_argument("--write-wavs", type=Path, metavar="DIR",
                        help="also write the people's recordings that no model here trained on as 8 kHz WAV files "
                        "trimmed to the word, in DIR/<label>/, for `antiphon-edge classify audio` and `antiphon eval "
                        "kws DIR` (after --gain and --phone)")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    dev = development_set()
    if args.gain:
        dev = replace(dev, waves=at_gain(dev.waves, args.gain))
    if args.phone:
        dev = replace(dev, waves=as_phone(dev.waves))
    # A speaker any of the models trained on (--train-speakers) leaves every summary, PocketSphinx's too, so
    # that all of them are figures on the same clips of people none of them heard.
    trained_on = sorted({s for path in args.models for s in trained_speakers(path)})
    if args.write_wavs:
        print(f"{write_wavs(args.write_wavs, dev, trained_on)} WAV files in {args.write_wavs}", file=sys.stderr)
    holders = espeak_holders()
    results = []
    for path in args.models:
        for bias in args.unknown_bias:
            r = score(spotter_predictions(path, dev.waves, bias), dev, trained_on)
            heard = spotter_predictions(path, holders, bias)
            r["espeak_holders_unknown"] = round(float(np.mean(heard == UNKNOWN_INDEX)), 4)
            results.append((str(path) + (f" (unknown {bias:+g})" if bias else ""), r))
    if not args.no_pocketsphinx:
        numbers = dev.labels < UNKNOWN_INDEX
        predicted = np.full(len(dev.labels), -1)
        predicted[numbers] = pocketsphinx_predictions(dev.waves[numbers])
        ps = score(predicted, dev, trained_on)
        for key in ("recorded_unknown", "voices_unknown", "holders_unknown"):
            ps[key] = None
        for s in ps["speakers"].values():
            s["unknown"] = None
        results.append(("PocketSphinx 5 en-us, ten-word grammar", ps))
    for name, r in results:
        if args.json:
            print(json.dumps({"model": name, **r}))
        else:
            _print(name, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
