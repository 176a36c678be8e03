"""LocalAgreement-2 on word lists: what two decodes agree on is confirmed, and stays so."""

from __future__ import annotations

from hushscribe.stream.agreement import LocalAgreement, TimedWord, common_prefix, normalise


def hyp(text: str, start: float = 0.0, step: float = 0.5) -> list[TimedWord]:
    """Words of ``text``, one every ``step`` seconds from ``start``."""
    return [
        TimedWord(start + i * step, start + (i + 1) * step, " " + w)
        for i, w in enumerate(text.split())
    ]


def texts(words: list[TimedWord]) -> str:
    return "".join(w.text for w in words).strip()


def test_words_compare_without_case_or_punctuation() -> None:
    assert normalise(" Country,") == normalise("country") == "country"
    assert normalise("“Hello!”") == "hello"
    assert normalise(" 中国。") == "中国"
    assert normalise(" ...") == "..."  # punctuation alone still compares as itself
    assert common_prefix(hyp("And so, my fellow"), hyp("and so my Fellow Americans")) == 4


def test_two_decodes_confirm_what_they_agree_on() -> None:
    agreement = LocalAgreement()
    assert agreement.insert(hyp("and so my")) == []  # one decode alone confirms nothing
    assert texts(agreement.tail) == "and so my"
    assert texts(agreement.insert(hyp("and so my fellow americans"))) == "and so my"
    assert texts(agreement.tail) == "fellow americans"
    assert texts(agreement.insert(hyp("and so my fellow americans ask"))) == "fellow americans"
    assert agreement.last_end == 2.5


def test_confirmed_words_are_never_taken_back() -> None:
    agreement = LocalAgreement()
    agreement.insert(hyp("ask not what"))
    confirmed = agreement.insert(hyp("ask not what your"))
    assert texts(confirmed) == "ask not what"
    # The next decode reads the start differently: the confirmed words stay, nothing is
    # confirmed twice, and the rest still has to agree with the tail.
    assert texts(agreement.insert(hyp("asked knot what your country"))) == "your"
    assert texts(agreement.tail) == "country"


def test_a_disagreement_stops_the_confirmation() -> None:
    agreement = LocalAgreement()
    agreement.insert(hyp("the tool is false"))
    assert texts(agreement.insert(hyp("the werbung is false"))) == "the"
    assert texts(agreement.tail) == "werbung is false"


def test_words_of_the_confirmed_audio_are_skipped_by_time() -> None:
    agreement = LocalAgreement()
    agreement.insert(hyp("one two three"))
    agreement.insert(hyp("one two three four"))  # "one two three" confirmed, ends at 1.5
    # A later decode of the same buffer: the confirmed words are found by their times.
    new = agreement.new_words(hyp("One, two, three, four five"))
    assert texts(new) == "four five"


def test_confirmed_words_moved_in_time_are_recognised_by_text() -> None:
    agreement = LocalAgreement()
    agreement.insert(hyp("one two three"))
    agreement.insert(hyp("one two three four"))  # confirmed up to 1.5 s
    # Times moved later: "three" now starts after the last confirmed end.
    shifted = [TimedWord(w.start + 0.3, w.end + 0.3, w.text) for w in hyp("one two three four")]
    assert texts(agreement.new_words(shifted)) == "four"
    # Times moved earlier: "four" starts before the last confirmed end, yet is new.
    early = [TimedWord(w.start - 0.3, w.end - 0.3, w.text) for w in hyp("one two three four")]
    assert texts(agreement.new_words(early)) == "four"


def test_a_repeat_of_the_last_confirmed_words_after_a_cut_is_dropped() -> None:
    """After the buffer is cut at the last confirmed word, the decoder sometimes repeats the end
    of its prompt at the start of the new buffer: those words are not confirmed twice."""
    agreement = LocalAgreement()
    agreement.insert(hyp("do for your country"))
    agreement.insert(hyp("do for your country"))  # all confirmed, end 2.0 s
    agreement.skip_to(2.0)  # the buffer now starts at 2.0 s
    repeat = hyp("your country and so", start=2.0)
    assert texts(agreement.new_words(repeat)) == "and so"


def test_a_word_said_again_later_is_new() -> None:
    agreement = LocalAgreement()
    agreement.insert(hyp("ask what"))
    agreement.insert(hyp("ask what"))  # confirmed, ends at 1.0
    later = hyp("ask what you can do ask", start=0.0)
    assert texts(agreement.new_words(later)) == "you can do ask"
    far = hyp("ask what", start=0.0) + hyp("ask what", start=3.0)
    assert texts(agreement.new_words(far)) == "ask what"


def test_flush_confirms_the_rest_and_force_the_words_before_a_time() -> None:
    agreement = LocalAgreement()
    agreement.insert(hyp("a b c"))
    assert texts(agreement.insert(hyp("a b c d e f"))) == "a b c"
    assert texts(agreement.force(2.5)) == "d e"  # "f" ends at 3.0
    assert texts(agreement.tail) == "f" and agreement.last_end == 2.5
    assert texts(agreement.flush(hyp("a b c d e f g"))) == "f g"
    assert agreement.tail == []
    assert agreement.insert(hyp("a b c d e f g")) == []


def test_skip_to_drops_the_tail_before_the_cut() -> None:
    agreement = LocalAgreement()
    agreement.insert(hyp("x y z"))  # tail only
    agreement.skip_to(1.0)
    assert texts(agreement.tail) == "z"
    assert agreement.last_end == 1.0


def test_memory_is_bounded() -> None:
    agreement = LocalAgreement()
    words: list[TimedWord] = []
    for i in range(2000):
        words.append(TimedWord(i * 0.5, i * 0.5 + 0.4, f" w{i}"))
        agreement.insert(words[-30:])
    assert len(agreement.recent) <= 5
    assert texts(agreement.tail) == "w1999"
