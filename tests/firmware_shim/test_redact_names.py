"""Redaction matches a field however it is spelt, and fails closed on deep nesting."""

from firmware_shim.redact import HASH_PREFIX, Redactor, hash_value

KEY = b"redaction-test-key-0123456789abc"


def test_spellings_of_one_name_are_all_redacted():
    r = Redactor(("idTag", "pass_word"), KEY)
    out = r.apply({"idTag": "A", "id_tag": "B", "ID-TAG": "C", "idtag": "D", "PassWord": "p",
                   "id_tags": "keep", "idTagNot": "keep", 7: "int key kept"})
    assert out["idTag"] == hash_value(KEY, "A") and out["id_tag"] == hash_value(KEY, "B")
    assert out["ID-TAG"] == hash_value(KEY, "C") and out["idtag"] == hash_value(KEY, "D")
    assert out["PassWord"] == hash_value(KEY, "p")
    assert (out["id_tags"], out["idTagNot"], out[7]) == ("keep", "keep", "int key kept")


def test_nesting_past_the_limit_is_hashed_away_not_passed_through():
    r = Redactor(("secret",), KEY)
    deep: dict = {"secret": "s3cr3t"}
    for _ in range(40):
        deep = {"n": deep}
    out = r.apply({"x": deep})
    assert "s3cr3t" not in repr(out)
    node = out["x"]
    while isinstance(node, dict):
        node = node["n"]
    assert node == HASH_PREFIX + "too-deep"
