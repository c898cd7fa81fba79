"""The README stays true: its usage example runs, and its test command is what CI runs."""

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_usage_example_runs():
    usage = README.split("## Usage", 1)[1]
    code = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    exec(compile(code, "README.md (Usage)", "exec"), {})


def test_two_setup_commands_and_ci_reads_the_test_command():
    commands = [line for line in README.split("## Usage")[0].splitlines()
                if line.startswith("python -m venv")]
    assert len(commands) == 2, commands
    assert "examples/cifar_simclr_gat.py" in commands[0]
    assert "pytest" in commands[1]
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci and "README.md" in ci
