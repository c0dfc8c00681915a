"""The `antiphon` command line: help, usage errors and exit codes."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from .. import conftest


def antiphon(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "server.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=conftest.timeout(60), check=False)


def test_help_lists_the_commands() -> None:
    """`antiphon --help` names every command."""
    result = antiphon("--help")
    assert result.returncode == 0
    for command in ("train", "eval", "sample"):
        assert command in result.stdout


def test_train_help_explains_the_budget() -> None:
    """`antiphon train text --help` documents the options with their defaults."""
    result = antiphon("train", "text", "--help")
    assert result.returncode == 0
    assert "--minutes" in result.stdout
    assert "torchrun" in result.stdout
    assert "(default: 64)" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--steps: give --steps or --minutes"),
        (["--steps", "0"], "--steps: must be at least 1, got 0"),
        (["--steps", "5", "--dropout", "1.5"], "--dropout: must be in [0, 1), got 1.5"),
        (["--steps", "5", "--hidden-size", "0"], "--hidden-size: must be at least 1, got 0"),
    ],
)
def test_train_rejects_bad_options_before_any_work(tiny_corpus: Path, args: list[str], message: str) -> None:
    """Bad training options exit 2 with a message naming the option."""
    result = antiphon("train", "text", "--corpus", str(tiny_corpus), "--device", "cpu", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_unreadable_corpus_exits_1(tmp_path: Path) -> None:
    """A corpus file that does not exist is a clear runtime error."""
    result = antiphon("train", "text", "--corpus", str(tmp_path / "none.txt"), "--steps", "1")
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_eval_digits_reports_accuracy_and_confusion(tiny_digits_checkpoint: Path) -> None:
    """`antiphon eval digits --json` ends with the accuracy and the confusion matrix of the recorded split."""
    import json

    from server.checkpoint import read_meta

    result = antiphon("eval", "digits", "--checkpoint", str(tiny_digits_checkpoint), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    metrics = read_meta(tiny_digits_checkpoint)["metrics"]
    assert report["count"] == 359
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    assert report["confusion"] == metrics["test_confusion"]
    assert "<- predicted" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "steps: must be at least 1, got 0"),
        (["--epochs", "-1"], "epochs: must be at least 1, got -1"),
    ],
)
def test_train_digits_rejects_bad_budgets(tmp_path: Path, args: list[str], message: str) -> None:
    """Bad digits budgets exit 2 with a message naming the option."""
    result = antiphon("train", "digits", "--out", str(tmp_path / "d.safetensors"), *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_eval_digits_refuses_a_text_checkpoint(tiny_text_checkpoint: Path) -> None:
    """A checkpoint of another kind is a runtime error naming both kinds."""
    result = antiphon("eval", "digits", "--checkpoint", str(tiny_text_checkpoint))
    assert result.returncode == 1
    assert "holds a 'char_lstm' model, not 'digits_cnn'" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "digits,nope"], "--models: unknown model 'nope'; known: digits, text_step"),
        (["--models", ","], "--models: give at least one model"),
        (["--formats", "onnx,coreml"], "--formats: unknown format 'coreml'; known: onnx, tflite"),
    ],
)
def test_export_rejects_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    """Bad export arguments exit 2 with a message naming the argument, and write nothing."""
    result = antiphon("export", "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert f"antiphon: error: {message}" in result.stderr
    assert not (tmp_path / "out").exists()


def test_export_offers_every_model_the_pipeline_exports() -> None:
    """The command's own list of models (kept free of torch for --help) is the pipeline's."""
    from export.specs import MODELS
    from server.commands.export import EXPORTABLE

    assert list(EXPORTABLE) == list(MODELS)


def test_export_writes_files_and_manifest(
    tmp_path: Path, tiny_digits_checkpoint: Path, tiny_text_checkpoint: Path, tiny_corpus: Path
) -> None:
    """`antiphon export --models digits --formats onnx` writes the file and a manifest that lists it; a second
    export into the folder prints only what it wrote, and says which models the manifest still lists."""
    import json

    out = tmp_path / "out"
    result = antiphon(
        "export", "--models", "digits", "--formats", "onnx", "--digits-checkpoint", str(tiny_digits_checkpoint),
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert list(manifest["models"]) == ["digits"]
    assert manifest["models"]["digits"]["files"]["onnx"]["float32"]["file"] == "digits.onnx"
    assert f"digits onnx float32: {out / 'digits.onnx'}" in result.stdout
    second = antiphon(
        "export", "--models", "text_small_step", "--formats", "onnx", "--small-text-checkpoint",
        str(tiny_text_checkpoint), "--text-corpus", str(tiny_corpus), "--out", str(out),
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "digits onnx" not in second.stdout and "text_small_step onnx float32" in second.stdout
    assert "(also lists, unchanged: digits)" in second.stdout
    assert set(json.loads((out / "manifest.json").read_text(encoding="utf-8"))["models"]) == {
        "digits", "text_small_step"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("family", "out", "message"),
    [
        ("text", "folder", "--out: {tmp}/folder is a directory; name the file to write"),
        (
            "text",
            "file/model.safetensors",
            "--out: cannot write {tmp}/file/model.safetensors: {tmp}/file is not a directory",
        ),
        ("digits", "folder", "--out: {tmp}/folder is a directory; name the file to write"),
    ],
)
def test_train_refuses_an_out_it_cannot_write_before_training(
    tmp_path: Path, tiny_corpus: Path, family: str, out: str, message: str
) -> None:
    """An --out that is a folder, or inside a file, exits 2 naming it before any step (it raised an OSError's
    traceback after the whole run, and left a temporary file beside the folder)."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("", encoding="utf-8")
    corpus = ["--corpus", str(tiny_corpus)] if family == "text" else []
    result = antiphon("train", family, "--dry-run", *corpus, "--out", str(tmp_path / out))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "antiphon: error: " + message.format(tmp=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dcgan", "--seed", "-1"], "--seed: must be in 0..2**63-1, got -1"),
        (["text", "--seed", str(2**64)], f"--seed: must be in 0..2**63-1, got {2**64}"),
        (["text", "--checkpoint-minutes", "0"], "--checkpoint-minutes: must be a positive number of minutes, got 0.0"),
        (["dcgan", "--train-limit", "1"], "--train-limit: must be at least --batch-size (32), got 1"),
        (["text", "--minutes", "0"], "--minutes: must be in (0, 10080], got 0.0"),
        (["text", "--minutes", "nan"], "--minutes: must be in (0, 10080], got nan"),
        (["audio", "--minutes", "-1"], "--minutes: must be in (0, 10080], got -1.0"),
        (["dcgan", "--minutes", "20000"], "--minutes: must be in (0, 10080], got 20000.0"),
    ],
)
def test_train_rejects_values_that_failed_mid_run(
    tmp_path: Path, tiny_corpus: Path, args: list[str], message: str
) -> None:
    """Values that raised a traceback from NumPy or torch once training began (or, for --checkpoint-minutes 0,
    saved every step; for --minutes nan, a time budget that never ran out) exit 2 naming the option."""
    corpus = ["--corpus", str(tiny_corpus)] if args[0] == "text" else []
    result = antiphon("train", *args, "--dry-run", *corpus, "--out", str(tmp_path / "m.safetensors"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"antiphon: error: {message}"


def test_a_directory_given_as_checkpoint_says_so(tmp_path: Path) -> None:
    """A folder named by --checkpoint is a one-line error that says it is a directory."""
    result = antiphon("sample", "text", "--checkpoint", str(tmp_path), "--max-tokens", "5")
    assert result.returncode == 1
    assert result.stderr == f"antiphon: error: checkpoint {tmp_path} is a directory, not a safetensors file\n"


def test_every_trainer_flag_shows_its_default() -> None:
    """Every flag of `antiphon train MODEL` and `sample text` says its default in --help (the model-size flags,
    --device and --max-tokens showed none)."""
    from server.cli import build_parser

    def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(action.choices)

    commands = subparsers(build_parser())
    parsers = [*subparsers(commands["train"]).values(), subparsers(commands["sample"])["text"]]
    for parser in parsers:
        for action in parser._actions:
            if action.option_strings and action.dest not in ("help", "stop"):
                assert "default" in (action.help or ""), f"{parser.prog} {action.option_strings[0]}"


def test_export_refuses_an_out_that_is_a_file(tmp_path: Path) -> None:
    """An --out that is a file exits 2 naming it (an OSError's traceback before)."""
    (tmp_path / "file").write_text("", encoding="utf-8")
    result = antiphon("export", "--models", "digits", "--out", str(tmp_path / "file"))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"antiphon: error: --out: {tmp_path / 'file'} is a file; name a folder for the files and manifest.json\n"
    )


def test_export_checks_every_checkpoint_before_converting(tmp_path: Path, tiny_digits_checkpoint: Path) -> None:
    """A missing checkpoint of a later model exits 1 naming its flag before the first model is converted (digits
    was converted, and its files replaced, first), and writes nothing."""
    missing = tmp_path / "none.safetensors"
    result = antiphon(
        "export", "--models", "digits,text_small_step", "--digits-checkpoint", str(tiny_digits_checkpoint),
        "--small-text-checkpoint", str(missing), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == f"antiphon: error: checkpoint {missing} does not exist (--small-text-checkpoint)\n"
    assert not (tmp_path / "out").exists()


def test_a_reader_that_goes_away_ends_sampling_quietly(tiny_text_checkpoint: Path) -> None:
    """`antiphon sample text | head -c 20`: the sampler stops with 141 (SIGPIPE's) and no BrokenPipeError traceback."""
    cmd = [sys.executable, "-m", "server.cli", "sample", "text", "--checkpoint", str(tiny_text_checkpoint)]
    with subprocess.Popen([*cmd, "--max-tokens", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert len(proc.stdout.read(20)) == 20
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=conftest.timeout(60)) == 141
    assert err == ""


@pytest.mark.parametrize(
    ("field", "said"),
    [
        ("max_tokens", "--max-tokens: bad"),  # a flag of this command: named as typed
        ("formats", "formats: bad"),  # a flag of another command (export) only: left as the field
        ("FILE", "FILE: bad"),
    ],
)
def test_a_bad_value_is_named_by_the_commands_own_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], field: str, said: str
) -> None:
    """An InvalidArgument's field is shown as the flag the user typed where the command has that flag, and as it
    is where only another command has it."""
    from server import cli
    from server.commands import text as text_commands
    from server.errors import InvalidArgument

    def refuse(args: argparse.Namespace) -> int:
        raise InvalidArgument(field, "bad")

    monkeypatch.setattr(text_commands, "_sample", refuse)
    with pytest.raises(SystemExit) as exited:
        cli.main(["sample", "text"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"antiphon: error: {said}\n"


def test_the_command_line_starts_without_torch_or_scipy() -> None:
    """Building the parser (``--help``, a usage error) imports neither torch nor SciPy: each command loads what it
    runs on once it runs, so a typo is answered at once."""
    code = (
        "import sys, server.cli; server.cli.build_parser(); print(*(m for m in ('torch', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_ctrl_c_while_the_commands_load_is_one_line() -> None:
    """SIGINT while the command line is still importing its commands ends it with 130 and one line, no traceback."""
    code = (
        "import os, signal, sys, server.commands.kws as k; "
        "k.__dict__['add_train'] = lambda *a: os.kill(os.getpid(), signal.SIGINT); "  # Ctrl-C while the parser is built
        "from server.cli import main; sys.exit(main(['train', 'kws']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 130, done.stderr
    assert done.stderr == "antiphon: interrupted\n"
