"""Chat quality a user sees: does a reply end its turn by itself, and is its first line the persona's speech?

    python benchmarks/chat_quality.py [--checkpoint PATH] [--chats 200] [--seed 0] [--json PATH]

Each chat is one turn of a fresh session through the text engine in process, as the chat page and the chat RPC send
it: a persona from the model's speakers, a user speaker (the server's default name, or another persona), one message
from a varied list (greetings, questions in modern English, lines in the plays' manner, long and short), and the
default sampling (temperature, top-k, top-p and max_tokens as the server's defaults; only the seed is set, so the run
is repeatable). Reported:

- ``ended_turn``: the share of replies that end their turn themselves (the blank line the engine stops at) rather
  than running into max_tokens;
- ``speech_first``: the share whose first line is the persona's speech; the others are ``name_first`` (the first
  line is a speaker's name: the model gave the turn to another character, or named the persona again) and ``empty``
  (the turn ended before a word was said). A name line is a name and a full stop alone on the line, in capitals or
  one of the model's speakers (``server.text.dialogue.names_a_speaker``).

Chats run side by side (the engine batches them); every chat's seed is its own, so the replies do not depend on how
they were batched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from server.app import load_text_engine
from server.engine.requests import ChatTurn, SamplingOptions
from server.engine.streams import FINISH_LENGTH, FINISH_STOP
from server.engine.text import TextEngine
from server.paths import default_checkpoint
from server.sampling import SamplingParams
from server.settings import ServeSettings
from server.text.dialogue import names_a_speaker

MESSAGES = (
    "Hello.",
    "Who are you?",
    "Good morrow, my lord. What news from the court?",
    "What do you think of love?",
    "Tell me about your father.",
    "Why are you so sad today?",
    "Where is the king?",
    "I have a letter for you from the Duke.",
    "Will you marry me?",
    "What shall we do now?",
    "Is it true that the army is coming?",
    "How do you do?",
    "Can you help me?",
    "What time is it?",
    "I am hungry. Is there any food in this house?",
    "Speak, I charge thee!",
    "Farewell, my friend.",
    "Thou art a villain.",
    "The queen is dead, my lord.",
    "Where have you been all this while?",
    "Do you believe in ghosts?",
    "What is the meaning of life?",
    "Tell me a story about the sea.",
    "Sir, the horses are ready and the night is cold.",
    "I love you more than words can wield the matter.",
    "Why dost thou weep?",
    "Come, let us go to dinner.",
    "Give me your hand.",
    "Who goes there?",
    "What say you to this, sir? Shall we fight, or shall we fly?",
    "My lord, I have heard strange news: the prince is fled to France, and his brother rules in his place.",
    "Nay, answer me. Stand, and unfold yourself.",
    "Are you well?",
    "Do you know the way to the castle?",
    "I am sorry for your loss.",
    "What would you have me do?",
    "Is this a dagger which I see before me?",
    "Peace! The king comes.",
    "How now, what's the matter?",
    "Tell me, good friend, what brings you here so late, and in such haste?",
)


def first_line_kind(reply: str, speakers: tuple[str, ...]) -> str:
    """ "speech", "name" (the first line names a speaker) or "empty"."""
    first = reply.lstrip("\n").split("\n", 1)[0].strip()
    if not first:
        return "empty"
    return "name" if names_a_speaker(first, speakers) else "speech"


async def one_chat(engine: TextEngine, index: int, turn: ChatTurn) -> dict[str, Any]:
    stream = engine.chat(turn)
    pieces = [piece async for piece in stream]
    reply = "".join(pieces)
    return {
        "chat": index,
        "persona": turn.persona,
        "speaker": turn.speaker,
        "message": turn.message,
        "reply": reply,
        "finish_reason": stream.finish_reason,
        "tokens": stream.completion_tokens,
        "first_line": first_line_kind(reply, engine.info.personas),
    }


def make_turns(engine: TextEngine, chats: int, seed: int) -> list[ChatTurn]:
    """``chats`` seeded first turns: persona, user speaker, message and sampling seed."""
    rng = random.Random(seed)
    personas = engine.info.personas
    turns = []
    for i in range(chats):
        persona = rng.choice(personas)
        # Half the chats speak under the server's default user name, half under another persona's.
        speaker = "" if rng.random() < 0.5 else rng.choice([p for p in personas if p != persona] or [persona])
        sampling = SamplingOptions(seed=seed * 1_000_003 + i)
        turns.append(ChatTurn(f"chat-{i}", rng.choice(MESSAGES), persona, speaker, sampling, f"chat-{i}"))
    return turns


async def run(checkpoint: Path, chats: int, seed: int) -> dict[str, Any]:
    settings = ServeSettings(device="cpu", max_streams=64, max_waiting=max(chats, 64), text_threads=1).validated()
    engine = load_text_engine(settings, checkpoint)
    engine.start()
    start = time.perf_counter()
    try:
        rows = await asyncio.gather(*(one_chat(engine, i, t) for i, t in enumerate(make_turns(engine, chats, seed))))
    finally:
        await engine.close()
    finish = Counter(row["finish_reason"] for row in rows)
    first = Counter(row["first_line"] for row in rows)
    defaults = SamplingParams()  # what the engine fills in for knobs a request leaves unset
    return {
        "checkpoint": str(checkpoint),
        "model": engine.description,
        "chats": chats,
        "seed": seed,
        "sampling": {
            "temperature": defaults.temperature,
            "top_k": defaults.top_k,
            "top_p": defaults.top_p,
            "max_tokens": min(defaults.max_tokens, engine.limits.max_tokens),
        },
        "ended_turn": finish[FINISH_STOP] / chats,
        "hit_max_tokens": finish[FINISH_LENGTH] / chats,
        "speech_first": first["speech"] / chats,
        "name_first": first["name"] / chats,
        "empty": first["empty"] / chats,
        "mean_reply_tokens": sum(row["tokens"] for row in rows) / chats,
        "seconds": round(time.perf_counter() - start, 1),
        "replies": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the default text checkpoint")
    parser.add_argument("--chats", type=int, default=200, help="chats (one turn each)")
    parser.add_argument("--seed", type=int, default=0, help="personas, messages and sampling seeds")
    parser.add_argument("--json", type=Path, help="also write the results, every reply included, here")
    args = parser.parse_args(argv)
    if args.chats < 1:
        parser.error(f"--chats must be at least 1, got {args.chats}")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    results = asyncio.run(run(args.checkpoint or default_checkpoint("text"), args.chats, args.seed))
    summary = {k: v for k, v in results.items() if k != "replies"}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
