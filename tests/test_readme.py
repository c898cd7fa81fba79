"""The README and docs/ stay true: the usage example runs and prints what the README shows, the
lightly recipes compute lightly's losses, the test command is what CI runs, the links resolve,
the headline numbers are the measured ones, and the API reference builds."""

import contextlib
import importlib.util
import io
import math
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from tests.process_group import run_on_ranks

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
LIGHTLY_DOC = (DOCS / "lightly.md").read_text()
NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e-\d+)?")


def code_after(text: str, marker: str, language: str = "python") -> str:
    """The first ``language`` code block after ``marker``."""
    assert marker in text, f"{marker!r} not found"
    match = re.search(rf"```{language}\n(.*?)```", text.split(marker, 1)[1] if marker else text, re.S)
    assert match, f"no {language} block after {marker!r}"
    return match.group(1)


def run_snippet(code: str, name: str) -> tuple[dict, str]:
    namespace: dict = {"__name__": name}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, name, "exec"), namespace)
    return namespace, out.getvalue()


def labelled_values(output: str) -> list[tuple[str, float]]:
    """``label  value`` per line."""
    pairs = []
    for line in output.strip().splitlines():
        label, value = line.rsplit(None, 1)
        pairs.append((label.strip(), float(value)))
    return pairs


# -- Usage --------------------------------------------------------------------------------------
def test_usage_example_prints_what_the_readme_shows():
    usage = README.split("## Usage", 1)[1]
    namespace, printed = run_snippet(code_after(usage, ""), "README.md (Usage)")
    shown = labelled_values(code_after(usage, "It prints", "text"))
    got = labelled_values(printed)
    assert [label for label, _ in got] == [label for label, _ in shown], printed
    for (label, value), (_, expected) in zip(got, shown, strict=True):
        assert value == pytest.approx(expected, rel=1e-3, abs=1e-4), (label, printed)
    values = dict(got)
    # What the comments and the text after the block say about these values.
    assert values["energy / views"] == pytest.approx(values["SimCLR loss"], abs=1e-4)
    assert values["message-passing loss"] == pytest.approx(
        values["step norm"] ** 2 / (2 * namespace["conv"].alpha), rel=1e-3)
    z0, z1 = namespace["z0"].detach(), namespace["z1"].detach()
    assert NTXentLoss(0.5)(z0, z1).item() == pytest.approx(values["SimCLR loss"], abs=1e-4)


def test_two_setup_commands_and_ci_reads_the_test_command():
    commands = [line for line in README.split("## Usage")[0].splitlines()
                if line.startswith("python -m venv")]
    assert len(commands) == 2, commands
    assert "examples/cifar_simclr_gat.py" in commands[0]
    assert "pytest" in commands[1]
    test_block = README.split("<!-- test-command -->", 1)[1].split("<!-- /test-command -->", 1)[0]
    assert commands[1] in test_block and README.count("<!-- test-command -->") == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci and "README.md" in ci


# -- the README is a user's page; the measurements live in docs/ -------------------------------
def test_readme_results_live_in_docs():
    assert "<!-- results-" not in README  # the suite writes into docs/, not here
    for page, marker in [("results.md", "results-quick"), ("performance.md", "results-perf")]:
        text = (DOCS / page).read_text()
        assert text.count(f"<!-- {marker} -->") == 1 and text.count(f"<!-- /{marker} -->") == 1
        assert text.index(f"<!-- {marker} -->") < text.index(f"<!-- /{marker} -->")
        # The regeneration command given on the page writes into that page.
        assert f"--update-docs docs/{page}" in text, page


def test_links_resolve():
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
            checked += 1
    assert checked >= 15  # the README's links to docs/, docs' links back and to the figures


def test_readme_headline_numbers_are_the_measured_ones():
    """Every number in the README's examples table appears in the docs pages it summarises."""
    measured = " ".join((DOCS / page).read_text() for page in ("results.md", "gnn.md", "guide.md"))
    table = README.split("| example | what it shows | headline (CPU) |", 1)[1].split("\n\n", 1)[0]
    headlines = [row.rsplit("|", 2)[1] for row in table.splitlines()[2:]]
    assert len(headlines) == 7
    found = 0
    for headline in headlines:
        for number in NUMBER.findall(headline.replace("`", " ")):
            if number in {"1", "8", "32"}:  # k, layer counts named in the text
                continue
            assert number in measured, (number, headline)
            found += 1
    assert found >= 20


# -- docs/lightly.md: the switching recipes ----------------------------------------------------
def memory_bank_recipe() -> dict:
    namespace, _ = run_snippet(code_after(LIGHTLY_DOC, "<!-- recipe: memory-bank -->"),
                               "docs/lightly.md (memory bank)")
    return namespace


def test_pyg_page_example_prints_what_the_page_shows():
    text = (DOCS / "pyg.md").read_text()
    _, printed = run_snippet(code_after(text, "## Bipartite inputs"), "pyg_page")
    shown = code_after(text, "prints", language="")
    assert printed.strip() == shown.strip()


def test_memory_bank_recipe_runs_as_written():
    namespace = memory_bank_recipe()
    loss_fn, z0 = namespace["loss_fn"], namespace["z0"]
    assert len(loss_fn.memory.bank) == 512 and z0.grad is not None and torch.isfinite(z0.grad).all()
    assert namespace["loss"].item() > 0


@pytest.mark.parametrize("keys_have_grad", [True, False])  # SimCLR with a bank / MoCo's keys
def test_memory_bank_recipe_equals_lightly(keys_have_grad):
    loss_class = memory_bank_recipe()["SimCLRLoss"]
    gen = torch.Generator().manual_seed(0)
    size, dim, batch = 64, 8, 16
    ours, reference = loss_class(0.3, memory_bank_size=size), NTXentLoss(0.3, memory_bank_size=(size, dim))
    start = F.normalize(torch.randn(size, dim, generator=gen), dim=1)
    ours.memory.bank.push(start)  # lightly's bank starts with random unit vectors; give both them
    reference.memory_bank.bank.copy_(start)
    for _ in range(6):  # more than one pass over the bank: the FIFO order must match too
        z0 = torch.randn(batch, dim, generator=gen).requires_grad_()
        z1 = torch.randn(batch, dim, generator=gen).requires_grad_(keys_have_grad)
        inputs = [z0, z1] if keys_have_grad else [z0]
        value, expected = ours(z0, z1), reference(z0, z1)
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
        for a, b in zip(torch.autograd.grad(value, inputs), torch.autograd.grad(expected, inputs),
                        strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # No gradient, no update (lightly's rule, e.g. a validation pass).
    before = ours.memory.bank.features.clone()
    ours(torch.randn(batch, dim, generator=gen), torch.randn(batch, dim, generator=gen))
    assert torch.equal(ours.memory.bank.features, before)


WORLD, LOCAL, DIM = 2, 6, 8


def distributed_worker(rank: int, gather_code: str, bank_code: str) -> tuple:
    gather_ns: dict = {}
    exec(compile(gather_code, "docs/lightly.md (gather)", "exec"), gather_ns)
    gen = torch.Generator().manual_seed(1)
    z0_all, z1_all = (torch.randn(WORLD * LOCAL, DIM, generator=gen, dtype=torch.float64)
                      for _ in range(2))
    rows = slice(rank * LOCAL, (rank + 1) * LOCAL)

    def value_and_grads(loss_fn):
        z0, z1 = z0_all[rows].clone().requires_grad_(), z1_all[rows].clone().requires_grad_()
        loss = loss_fn(z0, z1)
        return (loss.detach(), *torch.autograd.grad(loss, [z0, z1]))

    ours = value_and_grads(lambda a, b: gather_ns["nt_xent_all_ranks"](a, b, 0.3))
    theirs = value_and_grads(NTXentLoss(0.3, gather_distributed=True))
    mean_theirs = theirs[0].clone()
    dist.all_reduce(mean_theirs)
    # The memory-bank recipe under DDP: every rank's keys go into every rank's bank.
    bank_ns: dict = {"__name__": "recipe"}
    code = bank_code.split("\n\n# lightly:", 1)[0]  # the imports, not the usage lines
    exec(compile(code, "docs/lightly.md (memory bank)", "exec"), bank_ns)
    loss_fn = bank_ns["SimCLRLoss"](0.3, memory_bank_size=4 * WORLD * LOCAL)
    reference = NTXentLoss(0.3, memory_bank_size=(4 * WORLD * LOCAL, DIM),
                           gather_distributed=True)
    start = F.normalize(torch.randn(4 * WORLD * LOCAL, DIM, generator=gen), dim=1)
    loss_fn.memory.bank.push(start)
    reference.memory_bank.bank.copy_(start)
    bank_results = []
    for _ in range(3):
        z0, z1 = (torch.randn(WORLD * LOCAL, DIM, generator=gen)[rows].clone().requires_grad_()
                  for _ in range(2))
        a = loss_fn(z0, z1)
        b = reference(z0, z1)
        bank_results.append((a.detach(), b.detach(),
                             *torch.autograd.grad(a, [z0, z1]),
                             *torch.autograd.grad(b, [z0, z1])))
    return (ours, theirs, mean_theirs / WORLD, bank_results)


def test_gather_distributed_recipe_equals_lightly_in_two_processes(tmp_path):
    gather_code = code_after(LIGHTLY_DOC, "<!-- recipe: gather-distributed -->")
    bank_code = code_after(LIGHTLY_DOC, "<!-- recipe: memory-bank -->")
    results = run_on_ranks(distributed_worker, tmp_path, gather_code, bank_code, world=WORLD)
    values = []
    for rank in range(WORLD):
        ours, theirs, mean_theirs, bank_results = results[rank]
        # Each rank's gradients are lightly's; the value is the global batch's loss, the mean of
        # lightly's per-rank values.
        for a, b in zip(ours[1:], theirs[1:], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ours[0], mean_theirs, rtol=1e-10, atol=1e-12)
        values.append(ours[0])
        for a, b, *grads in bank_results:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            for x, y in zip(grads[:2], grads[2:], strict=True):
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(values[0], values[1])
    # Outside a process group the recipe is SimCLR's loss on the local batch.
    namespace, _ = run_snippet(code_after(LIGHTLY_DOC, "<!-- recipe: gather-distributed -->"),
                               "docs/lightly.md (gather)")
    z0, z1 = torch.randn(2, 10, 4).unbind(0)
    assert math.isclose(namespace["nt_xent_all_ranks"](z0, z1).item(), NTXentLoss()(z0, z1).item(),
                        rel_tol=1e-5)


# -- the API reference -------------------------------------------------------------------------
def load_build_api():
    spec = importlib.util.spec_from_file_location("build_api", DOCS / "build_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_builds_for_one_module(tmp_path):
    pytest.importorskip("pdoc")
    build_api = load_build_api()
    assert build_api.main(["mp_contrastive.losses", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "mp_contrastive" / "losses.html").read_text()
    assert "SimCLRLoss" in page and "MessagePassingLoss" in page
    assert "NT-Xent" in page  # the docstrings themselves, not only the names
    assert (tmp_path / "index.html").exists()
    with pytest.raises(ValueError, match="modules"):
        build_api.build([], tmp_path)


def test_api_reference_lists_every_public_module():
    modules = load_build_api().public_modules()
    assert {"mp_contrastive", "mp_contrastive.nn", "mp_contrastive.losses",
            "mp_contrastive.memory", "mp_contrastive.distributed"} <= set(modules)
    assert not [name for name in modules if "._" in name]
    assert not [name for name in modules if name.startswith("mp_contrastive.experiments")]
