"""Prompt sets: the paper's built-in sets and prompt files."""

from __future__ import annotations

import json

import pytest

from infinite_id.evaluation.prompt_sets import BUILTIN_PROMPT_SETS, PromptSet, load_prompt_file, resolve_prompt_sets
from infinite_id.style_prompts import names_style


def test_builtin_sets_are_the_papers_and_match_the_style_rule():
    raw, style = BUILTIN_PROMPT_SETS["raw"], BUILTIN_PROMPT_SETS["style"]
    assert len(raw) == 6 and len(style) == 7
    assert raw.render("woman")[0] == "a photo of a woman wearing a brown clothing, in the snow"
    assert style.render("man")[0] == "a man in comic book style"
    # adain="auto" switches AdaIN-mean on for exactly the style set
    assert not any(names_style(p) for p in raw.render("man"))
    assert all(names_style(p) for p in style.render("woman"))
    assert [s.name for s in resolve_prompt_sets(["paper"])] == ["raw", "style"]


def test_prompt_files(tmp_path):
    txt = tmp_path / "my prompts.txt"
    txt.write_text("# comment\na {class_word} on the moon\n\na castle\n")
    (only,) = load_prompt_file(txt)
    assert only.name == "my-prompts" and only.render("man") == ["a man on the moon", "a castle"]
    js = tmp_path / "sets.json"
    js.write_text(json.dumps({"a": ["a {class_word}"], "b": ["b {class_word}", "c"]}))
    assert [s.name for s in resolve_prompt_sets([str(js), "raw"])] == ["a", "b", "raw"]
    bad = tmp_path / "bad.txt"
    bad.write_text("a {name} in the park\n")
    with pytest.raises(ValueError, match="unknown slot"):
        load_prompt_file(bad)
    with pytest.raises(ValueError, match="unknown prompt set"):
        resolve_prompt_sets(["nope"])
    with pytest.raises(ValueError, match="unique"):
        resolve_prompt_sets(["raw", "raw"])
    with pytest.raises(ValueError, match="empty"):
        PromptSet("x", ())
