"""The commit-message hook: subject length and the blank line before the body."""

from pathlib import Path

from infra.tools.commit_msg import MAX_SUBJECT, main, problems


def test_a_short_subject_and_a_body_pass() -> None:
    assert problems("Fix the sweep\n\nBecause the lease ran out.\n# comment\n") == []


def test_a_long_subject_is_refused() -> None:
    assert problems("x" * (MAX_SUBJECT + 1)) == [
        f"the subject has {MAX_SUBJECT + 1} characters (at most {MAX_SUBJECT})"
    ]


def test_an_empty_subject_and_a_missing_blank_line_are_refused() -> None:
    assert problems("") == ["the subject line is empty"]
    assert problems("Subject\nbody right after") == [
        "the second line must be blank: subject, blank line, then the why"
    ]


def test_main_reads_the_message_file(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("Short subject\n")
    bad.write_text("y" * 80 + "\n")
    assert main([str(good)]) == 0
    assert main([str(bad)]) == 1
