"""Speaker names of the dialogue form."""

from __future__ import annotations

from server.text.dialogue import names_a_speaker, speakers


def test_speakers_are_counted_in_either_case() -> None:
    """Upper-case and title-case speaker lines count; names inside speeches do not."""
    text = "Kent.\nSir.\n\nKENT.\nAy.\n\nLADY CAPULET.\nNurse.\n\nKent.\nKent. is here.\n"
    assert speakers(text, min_turns=1) == ["Kent", "KENT", "LADY CAPULET"]


def test_rare_speakers_are_left_out() -> None:
    """Only speakers with enough turns become personas."""
    text = "\n\n".join(["Fool.\nNuncle!"] * 3 + ["Edgar.\nPoor Tom."])
    assert speakers(text, min_turns=2) == ["Fool"]


def test_name_lines_are_told_from_one_word_speeches() -> None:
    """A capitalised or known name with a full stop names a speaker; a one-word speech does not."""
    assert names_a_speaker("KING.")
    assert names_a_speaker("FIRST LORD.")
    assert names_a_speaker("Lear.", known=("Lear",))
    assert not names_a_speaker("Lear.")
    assert not names_a_speaker("Peace.")
    assert not names_a_speaker("KING. What ho!")
    assert not names_a_speaker("")
