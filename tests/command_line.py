"""Checks of a script's command line, shared by tests/benchmarks/test_cli.py and
tests/examples/test_cli.py: each script has ``build_parser()`` and ``main(argv)``."""

from types import ModuleType

import pytest


def refused(main, argv, capsys) -> str:
    """Runs ``main(argv)``, which must refuse ``argv`` as argparse does (exit status 2) before
    anything runs (nothing on stdout); returns what it wrote to stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran, not even a preset announcement or a table title
    return captured.err


def assert_help_shows_every_default(module: ModuleType, capsys) -> None:
    """Every option of ``module``'s parser that takes a value has a default or says what it is,
    and ``--help`` shows the defaults (``--seed``'s 0) and the docstring's whole first paragraph."""
    parser = module.build_parser()
    for action in parser._actions:
        if action.option_strings and action.nargs != 0:  # flags are off unless given
            assert action.default is not None or "default" in (action.help or ""), \
                f"{module.__name__} {action.option_strings[0]} does not say what its default is"
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    first_paragraph = " ".join(module.__doc__.strip().split("\n\n")[0].split())
    assert first_paragraph in shown  # never cut mid-sentence
    assert "(default: 0)" in shown  # --seed's default is shown by the formatter
