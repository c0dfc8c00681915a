"""Speech beyond espeak-ng: the recorded speakers Debian ships (recordings) and the festival and flite voices
(sources)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from server.data.speech import NUMBER_WORDS
from server.errors import InvalidArgument
from server.kws import recordings, sources
from server.kws.data import UNKNOWN_INDEX
from server.kws.recordings import _label
from server.kws.sources import VoiceRendering

needs_asterisk = pytest.mark.skipif(
    not recordings.ASTERISK.exists(), reason="asterisk-core-sounds-en-wav (a Debian package) is not installed"
)


def test_transcript_labels() -> None:
    """One number word is its label; a transcript with a number word, homophone or digit among others has none."""
    assert _label("Seven.") == NUMBER_WORDS.index("seven")
    assert _label("Thank you.") == UNKNOWN_INDEX
    assert _label("seventeen") == UNKNOWN_INDEX
    assert _label("press 1 to continue") is None
    assert _label("the one you want") is None
    assert _label("for") is None


@needs_asterisk
def test_asterisk_gives_allisons_ten_digits_and_other_words() -> None:
    """Each number word once, trimmed, at 16 kHz; hundreds of other prompts; the teens and tens are hard; "niner"
    (nine as pilots say it) is neither."""
    found = recordings.asterisk_utterances()
    numbers = sorted(u.text for u in found if u.label < UNKNOWN_INDEX)
    assert numbers == sorted(NUMBER_WORDS)
    assert all(0.2 < len(u.audio) / 16000 < 1.0 for u in found if u.label < UNKNOWN_INDEX)
    unknown = [u for u in found if u.label == UNKNOWN_INDEX]
    assert len(unknown) > 300
    assert {"seventeen", "forty", "sixth"} <= {u.text for u in unknown if u.hard}
    assert "niner" not in {u.text for u in found}
    assert not any(w in u.text.split() for u in unknown for w in NUMBER_WORDS)


@needs_asterisk
def test_asterisk_running_cuts_are_number_words_of_running_speech() -> None:
    """132 cuts of Allison's prompts, each a number word of 0.3 to 0.9 s with its label."""
    found = recordings.asterisk_running_utterances()
    assert len(found) == 132
    assert all(NUMBER_WORDS[u.label] == u.text and 0.3 <= len(u.audio) / 16000 < 0.9 for u in found)
    assert {u.text for u in found} == set(NUMBER_WORDS)


needs_tidigits = pytest.mark.skipif(
    not recordings.TIDIGITS.exists(), reason="pocketsphinx-testdata (a Debian package) is not installed"
)


@needs_tidigits
def test_tidigits_cuts_five_digits() -> None:
    """Two nine three four zero, each a cut of a quarter to half a second."""
    found = recordings.tidigits_utterances()
    assert [u.text for u in found] == ["two", "nine", "three", "four", "zero"]
    assert all(0.2 < len(u.audio) / 16000 < 0.6 for u in found)


@pytest.mark.skipif(not recordings.CARDS.exists(), reason="pocketsphinx-testdata (a Debian package) is not installed")
def test_cards_speaker_says_seven_number_words_among_other_words() -> None:
    """Four, seven, five, five, eight, four, seven cut from the card names; "ten", "of", "clubs" are unknown."""
    found = recordings.cards_utterances()
    numbers = [u.text for u in found if u.label < UNKNOWN_INDEX]
    assert numbers == ["four", "seven", "five", "five", "eight", "four", "seven"]
    assert {"ten", "of", "clubs", "spades", "hearts", "queen"} == {u.text for u in found if u.label == UNKNOWN_INDEX}
    assert all(0.08 < len(u.audio) / 16000 < 0.9 for u in found)
    assert "pocketsphinx-cards" in recordings.DEVELOPMENT_SPEAKERS


@pytest.mark.skipif(
    not (recordings.POCKETSPHINX_DATA / "librivox").exists(),
    reason="pocketsphinx-testdata (a Debian package) is not installed",
)
def test_pocketsphinx_speakers_are_cut_from_running_speech() -> None:
    """The numbers speaker's three, six and two after their tens words (hard negatives); the commands' and the
    LibriVox reader's other words, homophones of number words ("to", "for") left out; all kept from training."""
    numbers = recordings.recorded_speaker("pocketsphinx-numbers")
    assert [(u.text, u.label) for u in numbers if u.label < UNKNOWN_INDEX] == [("three", 3), ("six", 6), ("two", 2)]
    assert [u.text for u in numbers if u.hard] == ["thirty", "forty", "ninety"]
    goforward = recordings.recorded_speaker("pocketsphinx-goforward")
    reader = recordings.recorded_speaker("librivox-austen")
    assert len(goforward) == 9 and len(reader) == 59
    assert all(u.label == UNKNOWN_INDEX for u in goforward + reader)
    assert {"to", "for"}.isdisjoint(u.text for u in reader) and {"dashwood", "amiable"} <= {u.text for u in reader}
    assert all(0.2 < len(u.audio) / 16000 < 1.0 for u in numbers + goforward + reader)
    assert {"pocketsphinx-numbers", "pocketsphinx-goforward", "librivox-austen"} <= set(recordings.DEVELOPMENT_SPEAKERS)


@pytest.mark.skipif(
    not all(folder.is_dir() for folder, _ in recordings.ANNOUNCERS.values()) or shutil.which("sox") is None,
    reason="saytime, csmash-data, scid-data and sox (Debian packages) are not installed",
)
def test_announcers_say_number_words_beside_teens_and_other_words() -> None:
    """The talking clock's and the umpire's ten digits, the chess announcer's one to eight, each decoded to a word
    of a fifth of a second to a second; their teens and tens are hard negatives, "oh" and sound effects are left
    out, and all three are kept from training."""
    clock, umpire, chess = (recordings.recorded_speaker(s) for s in recordings.ANNOUNCERS)
    for found, numbers in ((clock, NUMBER_WORDS), (umpire, NUMBER_WORDS), (chess, NUMBER_WORDS[1:9])):
        assert sorted(u.text for u in found if u.label < UNKNOWN_INDEX) == sorted(numbers)
        assert all(NUMBER_WORDS[u.label] == u.text for u in found if u.label < UNKNOWN_INDEX)
        assert all(0.2 < len(u.audio) / 16000 < 1.0 for u in found)
    assert {u.text for u in clock if u.hard} >= {"13", "19", "50"} and "oh" not in {u.text for u in clock}
    assert {"exactly", "the time is"} <= {u.text for u in clock if u.label == UNKNOWN_INDEX}
    assert {u.text for u in umpire if u.hard} >= {"seventeen", "thirty"} and "racket" not in {u.text for u in umpire}
    assert {"bishop", "queen", "a"} <= {u.text for u in chess if u.label == UNKNOWN_INDEX}
    assert set(recordings.ANNOUNCERS) <= set(recordings.DEVELOPMENT_SPEAKERS)


@pytest.mark.skipif(
    not recordings.TUXPAINT.is_dir() or shutil.which("sox") is None,
    reason="tuxpaint-stamps-default and sox (Debian packages) are not installed",
)
def test_tuxpaint_readers_say_the_digits_beside_names_and_letters() -> None:
    """Each reader's zero to nine, the American one's stamp names and the British one's letter names (each
    recording once, no "oh") as unknown; both kept from training."""
    american, british = recordings.recorded_speaker("tuxpaint-en"), recordings.recorded_speaker("tuxpaint-en_GB")
    for found in (american, british):
        assert [u.text for u in found if u.label < UNKNOWN_INDEX] == list(NUMBER_WORDS)
        assert all(0.2 < len(u.audio) / 16000 < 1.6 for u in found)
    assert {"frog", "penguin"} <= {u.text for u in american if u.label == UNKNOWN_INDEX}
    letters = [u.text for u in british if u.label == UNKNOWN_INDEX]
    assert sorted(letters) == sorted(set("abcdefghijklmnpqrstuvwxyz"))
    assert {"tuxpaint-en", "tuxpaint-en_GB"} <= set(recordings.DEVELOPMENT_SPEAKERS)


@pytest.mark.skipif(
    not (recordings.KTUBERLING / "en").exists() or shutil.which("sox") is None,
    reason="ktuberling-data and sox (Debian packages) are not installed",
)
def test_ktuberling_reads_the_english_object_names_as_unknown() -> None:
    """The English reader's words (ball, nose...) decoded from Ogg Vorbis, all unknown, none empty."""
    found = recordings.ktuberling_utterances("en")
    assert {"ball", "nose"} <= {u.text for u in found}
    assert all(u.label == UNKNOWN_INDEX and len(u.audio) > 1000 for u in found)


@pytest.mark.skipif(
    not (recordings.KLETTRES / "en").exists() or shutil.which("sox") is None,
    reason="klettres-data and sox (Debian packages) are not installed",
)
def test_klettres_leaves_out_the_letter_o() -> None:
    """Letter names are unknown, except O, which is said as "oh", a homophone of zero."""
    texts = {u.text for u in recordings.klettres_utterances("en")}
    assert {"a", "b", "dog"} <= texts and "o" not in texts


def test_voice_rendering_refuses_an_unknown_speaker() -> None:
    """A speaker outside VOICES is refused by name."""
    with pytest.raises(InvalidArgument, match="speaker"):
        VoiceRendering("flite-nobody").validate()


@pytest.mark.parametrize("speaker", ["flite-slt", "festival-kal"])
def test_voices_render_words_deterministically(speaker: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A voice says a word for a quarter to one second; the same seed gives the same stretch, pitch and audio."""
    if speaker not in sources.available_voices():
        pytest.skip(f"{speaker}'s engine or voice (Debian packages {sources.VOICE_PACKAGES[speaker.split('-')[0]]}) "
                    "is not installed")  # fmt: skip
    monkeypatch.setenv("ANTIPHON_CACHE", str(tmp_path))
    a = sources.voice_utterances(speaker, [("seven", 7)], 2, seed=0)
    b = sources.voice_utterances(speaker, [("seven", 7)], 2, seed=0)
    assert [u.label for u in a] == [7, 7]
    assert all(0.2 < len(u.audio) / 16000 < 1.2 for u in a)
    assert all(np.array_equal(x.audio, y.audio) for x, y in zip(a, b, strict=True))


@pytest.mark.skipif(
    not {"flite-slt", "festival-kal"} <= set(sources.available_voices()),
    reason="flite and festival with their voices (Debian packages) are not installed",
)
def test_extra_training_clips_follow_the_base_and_leave_out_the_development_voices(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base clips stay first and unchanged; each training voice says each number word and the asked other
    words; perturbed copies follow; no development voice speaks."""
    from server.kws.data import BaseClips, Clip, KWSDataConfig

    monkeypatch.setenv("ANTIPHON_CACHE", str(tmp_path))
    monkeypatch.setattr(sources, "training_voices", lambda: ["flite-slt", "festival-kal"])
    base = BaseClips([Clip(7, "seven", None), Clip(UNKNOWN_INDEX, "cat", None)], [np.ones(800, np.float32)] * 2)
    config = KWSDataConfig(per_number=1, unknown_words=8, heldout_per_label=2, voice_renderings=1, voice_words=2,
                           perturbed_copies=1)  # fmt: skip
    out = sources.extra_training_clips(config, base)
    assert out.clips[:2] == base.clips and out.audio[0] is base.audio[0]
    voiced = out.clips[2:26]  # 2 voices x (10 number words + 2 other words)
    assert sorted(c.label for c in voiced) == sorted(list(range(10)) * 2 + [UNKNOWN_INDEX] * 4)
    # one copy of the base number word and of the 24 voiced clips (not of the base's other word)
    assert len(out.clips) == 2 + 24 + 25


@pytest.mark.skipif(
    not recordings.TUXPAINT.is_dir() or shutil.which("sox") is None,
    reason="tuxpaint-stamps-default and sox (Debian packages) are not installed",
)
def test_stamp_readers_train_only_with_stamp_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tux Paint's readers of other languages are recorded speakers outside the development set, read as unknown
    with --stamp-unknown and never with --recorded-unknown (which keeps reading what it read before them)."""
    from server.kws.data import BaseClips, KWSDataConfig

    assert "tuxpaint-fr" in sources.training_speakers() and "tuxpaint-en" not in sources.training_speakers()
    assert recordings.is_stamp_reader("tuxpaint-ml") and not recordings.is_stamp_reader("tuxpaint-en_GB")
    monkeypatch.setattr(sources, "training_speakers", lambda: ["tuxpaint-ml", "klettres-tn"])
    stamps, klettres = len(recordings.recorded_speaker("tuxpaint-ml")), len(recordings.recorded_speaker("klettres-tn"))
    assert stamps > 0 and klettres > 0
    base = BaseClips([], [])
    for flags, expected in (({"stamp_unknown": True}, stamps), ({"recorded_unknown": True}, klettres)):
        out = sources.extra_training_clips(KWSDataConfig(**flags), base)  # type: ignore[arg-type]
        assert len(out.clips) == expected and all(c.label == UNKNOWN_INDEX for c in out.clips)


def test_training_reads_no_development_speaker_or_voice() -> None:
    """The voices and recorded speakers training reads hold none of the development set's."""
    assert not set(sources.DEVELOPMENT_VOICES) & set(sources.training_voices())
    assert not set(sources.DEVELOPMENT_SPEAKERS) & set(sources.training_speakers())


def test_train_speakers_must_be_development_speakers() -> None:
    """--train-speakers names development speakers only, and says which ones there are."""
    from server.kws.data import KWSDataConfig

    with pytest.raises(InvalidArgument, match=r"train_speakers.*asterisk-allison"):
        KWSDataConfig(train_speakers=("klettres-de",)).validate()
    KWSDataConfig(train_speakers=("tidigits-dhd",)).validate()


@needs_tidigits
def test_a_named_development_speaker_trains_with_every_word(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A development speaker named by --train-speakers joins the training clips, number words included."""
    from server.kws.data import BaseClips, Clip, KWSDataConfig

    monkeypatch.setenv("ANTIPHON_CACHE", str(tmp_path))
    base = BaseClips([Clip(7, "seven", None)], [np.ones(800, np.float32)])
    config = KWSDataConfig(per_number=1, unknown_words=8, heldout_per_label=2, train_speakers=("tidigits-dhd",))
    out = sources.extra_training_clips(config, base)
    assert [c.text for c in out.clips] == ["seven", "two", "nine", "three", "four", "zero"]
    assert config.beyond_espeak
    twice = sources.extra_training_clips(replace(config, train_speaker_copies=2), base)
    assert [c.text for c in twice.clips[1:]] == ["two", "nine", "three", "four", "zero"] * 2
