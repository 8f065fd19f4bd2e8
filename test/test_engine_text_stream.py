"""IncrementalDecoder: streaming answer text token by token (D9: feedback kept stalling while the
decoded text ended in U+FFFD, so a 600-token answer sent 9 feedback messages)."""

from livevlm_ros.engine.text_stream import IncrementalDecoder

#: A byte-level "tokenizer": token i is VOCAB[i]; most tokens end inside a multi-byte character.
VOCAB = [b"ab\xe2", b"\x82\xac c\xc3", b"\xa9 d\xf0\x9f", b"\x98\x80", b"x\xff", b"y", b"z\xe2"]


def decoder():
    return IncrementalDecoder(lambda ids: b"".join(VOCAB[i] for i in ids).decode("utf-8", errors="replace"))


def test_complete_characters_flow_while_the_text_ends_in_an_unfinished_one():
    text = decoder()
    pieces = [text.push(i) for i in range(4)]
    assert pieces == ["ab", "\u20ac c", "\u00e9 d", "\U0001F600"]  # before: "", "", "", everything
    assert "".join(pieces) == text.text == "ab\u20ac c\u00e9 d\U0001F600"
    assert text.finish() == ""


def test_bytes_that_never_form_a_character_pass_once_text_follows_them():
    text = decoder()
    assert text.push(4) == "x"  # "x\ufffd": the 0xff might still be an unfinished character
    assert text.push(5) == "\ufffdy"  # followed by text: it never will be
    assert text.push(6) == "z"  # "z" + an unfinished character, held back ...
    assert text.finish() == "\ufffd"  # ... until the answer ends
    assert text.text == "x\ufffdyz\ufffd"


def test_one_piece_per_token_even_when_it_is_empty():
    text = decoder()
    assert [text.push(i) for i in (6, 5)] == ["z", "\ufffdy"]
    lone = IncrementalDecoder(lambda ids: bytes([0xe2, 0x82, 0xac][: len(ids)]).decode("utf-8", errors="replace"))
    assert [lone.push(0), lone.push(1), lone.push(2)] == ["", "", "\u20ac"]
