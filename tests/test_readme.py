"""The README's CLI reference and input list are the code's."""

from __future__ import annotations

from pathlib import Path

from denoise_cli.cli import INPUT_EXTENSIONS, reference

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_cli_reference_is_generated_from_the_code() -> None:
    block = README.split("<!-- cli-reference -->\n```\n", 1)[1].split("```", 1)[0]
    assert block.rstrip("\n") == reference()


def test_one_list_of_input_extensions() -> None:
    line = README.split("Accepted inputs", 1)[1].split("\n\n", 1)[0]
    listed = [w.strip("`.,\n ") for w in line.split("`")[1::2]]
    assert ["." + e for e in listed] == list(INPUT_EXTENSIONS)
