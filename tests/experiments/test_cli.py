"""mp_contrastive.experiments.cli: the argument types agree with the library's checks; run_cli and the
post-parse checks give exit status 2 with one line."""

import argparse

import pytest

from mp_contrastive._validation import check_nonnegative, check_positive, check_positive_int
from mp_contrastive.experiments import cli


@pytest.mark.parametrize("text", ["-3", "0", "1", "7", "1.5", "x", "nan", "inf", "-0.0", "1e-9"])
def test_types_accept_what_the_library_accepts(text):
    def library(check, convert):
        try:
            return check(convert(text), "v")
        except ValueError:
            return None

    def command_line(parse):
        try:
            return parse(text)
        except argparse.ArgumentTypeError:
            return None

    assert command_line(cli.positive_int) == library(check_positive_int, int)
    assert command_line(cli.positive_float) == library(check_positive, float)
    assert command_line(cli.nonnegative_float) == library(check_nonnegative, float)


def test_messages_name_no_library_argument():
    with pytest.raises(argparse.ArgumentTypeError, match=r"^must be a positive int, got 0$"):
        cli.positive_int("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^must be a finite number > 0, got -1.0$"):
        cli.positive_float("-1")
    with pytest.raises(argparse.ArgumentTypeError, match=r"must lie in \[0, 1\), got 1.0"):
        cli.fraction("1")
    assert cli.fraction("0") == 0.0
    assert cli.float_in(0, 0.5, low_open=True)("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match=r"\(0, 0.5\]"):
        cli.float_in(0, 0.5, low_open=True)("0")
    with pytest.raises(argparse.ArgumentTypeError, match="must be an int >= 2, got 1"):
        cli.int_at_least(2)("1")
    assert cli.nonnegative_int("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="must be one of"):
        cli.comma_choices(("a", "b"))("a,c")
    assert cli.comma_choices(("a", "b"))("b, a") == ["b", "a"]


def test_library_error_names_the_flag():
    assert cli.library_error(ValueError("'noise_edges' must be >= 0, got -1")) == \
        "argument --noise-edges: 'noise_edges' must be >= 0, got -1"
    assert cli.library_error(ValueError("'snapshot_steps' bad"), {"snapshot_steps": "--snapshots"}) \
        .startswith("argument --snapshots: ")
    assert cli.library_error(ValueError("no name here")) == "no name here"


def test_checks_run_after_parsing(capsys):
    parser = cli.ArgumentParser(prog="tool")
    parser.add_argument("--low", type=int, default=0)
    parser.add_argument("--high", type=int, default=1)

    def check(args):
        if args.low > args.high:
            raise cli.argument_error("--low", f"{args.low} is above --high {args.high}")

    parser.add_check(check)
    assert parser.parse_args(["--low", "1"]).low == 1
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--low", "2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "tool: error: argument --low: 2 is above --high 1"


def test_run_cli_prints_user_errors_as_one_line(capsys):
    def bad_setting():
        raise ValueError("'lr' must be a finite number > 0, got 0")

    with pytest.raises(SystemExit) as exit_info:
        cli.run_cli(bad_setting)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: 'lr' must be a finite number > 0, got 0\n"

    def bug():
        raise TypeError("unsupported format string passed to NoneType.__format__")

    with pytest.raises(TypeError):  # a bug keeps its traceback
        cli.run_cli(bug)


def test_help_formatter_shows_defaults_once(capsys):
    parser = cli.make_parser("Tool.\n\n    tool --n 3   # an example line kept as written\n")
    parser.add_argument("--n", type=int, default=3, help="count")
    parser.add_argument("--names", nargs="+", default=["a", "b"], help="names")
    parser.add_argument("--later", default=None, help="set later (default: decided by the preset)")
    parser.add_argument("--flag", action="store_true", help="a flag")
    text = parser.format_help()
    assert "count (default: 3)" in text and "names (default: a b)" in text
    assert text.count("default") == 3 and "a flag\n" in text
    assert "    tool --n 3   # an example line kept as written" in text


def test_output_dir_refuses_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(argparse.ArgumentTypeError, match="is a file"):
        cli.output_dir(str(tmp_path / "file"))
    with pytest.raises(argparse.ArgumentTypeError, match="is a file"):
        cli.output_dir(str(tmp_path / "file" / "below"))
    assert cli.output_dir(str(tmp_path / "new" / "deeper")) == str(tmp_path / "new" / "deeper")


def test_ctrl_c_is_one_line_and_status_130(capsys):
    from mp_contrastive.experiments.cli import run_cli

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        run_cli(interrupted)
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("interrupted:") and "--resume" in err


def test_a_run_stopped_by_sigterm_is_its_message_and_status_143(capsys):
    import signal

    from mp_contrastive._signals import Interrupted
    from mp_contrastive.experiments.cli import run_cli

    def stopped():
        raise Interrupted("stopped by SIGTERM; checkpoint written to 'x': continue with --resume",
                          signal.SIGTERM)

    with pytest.raises(SystemExit) as exit_info:
        run_cli(stopped)
    assert exit_info.value.code == 143
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("interrupted: stopped by SIGTERM")


def test_an_os_error_is_one_line_and_status_1(capsys):
    from mp_contrastive.experiments.cli import run_cli

    def full_disk():
        raise OSError(28, "could not write the checkpoint 'x' (No space left on device)")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(full_disk)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
