"""Cutting a reply into sentences to speak while the rest is written."""

from __future__ import annotations

from server.engine.speech import speakable, split_sentences


def test_sentences_end_at_punctuation_and_line_breaks() -> None:
    done, rest = split_sentences("Good night, my lord. Sleep well!\nAnd dream", 200)
    assert done == ["Good night, my lord.", " Sleep well!", "\n"]
    assert rest == "And dream"


def test_a_stop_needs_a_following_space() -> None:
    done, rest = split_sentences("It cost 3.5 crowns", 200)
    assert done == [] and rest == "It cost 3.5 crowns"
    done, rest = split_sentences('"Go." Then', 200)
    assert done == ['"Go."'] and rest == " Then"


def test_long_sentences_are_cut_at_a_space() -> None:
    text = "word " * 30
    done, rest = split_sentences(text, 42)
    assert all(len(s) <= 42 for s in [*done, rest])
    assert "".join([*done, rest]) == text
    assert all(not s.startswith("rd") for s in done)


def test_speakable() -> None:
    assert speakable(" Ay.") and not speakable("\n") and not speakable("--!")
