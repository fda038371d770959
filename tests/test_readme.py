"""The README's test command is what CI runs (.ci/run), and its example code runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks(text: str, lang: str):
    parts = text.split(f"```{lang}\n")[1:]
    return [p.split("```", 1)[0].strip() for p in parts]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    test_cmd = [b for b in _blocks(readme, "bash") if "pytest" in b]
    assert len(test_cmd) == 1, "the README must have exactly one test command block"
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd[0] in ci, "the README's test command and .ci/run differ"


def test_readme_example_runs():
    readme = (ROOT / "README.md").read_text()
    (code,) = _blocks(readme, "python")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["indices"].shape == (200, 5000) and scope["I"].shape == (200, 100)
    assert scope["res_c"].indices.shape == (200, 100)
    assert set(scope["m"]) >= {"mAP@all", "mAP@200", "P@100", "P@200"}
