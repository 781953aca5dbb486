from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_exactly_the_readme_setup_lines():
    readme = (ROOT / "README.md").read_text().splitlines()
    block = readme[readme.index("```bash") + 1:]
    readme_lines = block[:block.index("```")]
    ci_lines = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line.startswith("pip install")]
    assert ci_lines == [line.split("  #")[0].strip() for line in readme_lines if line.startswith("pip install")]
    assert len(ci_lines) == 2 and ci_lines[0].endswith("python infer.py") and "pytest" in ci_lines[1]
