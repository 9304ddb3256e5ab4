"""A ``pand-train`` call that must be refused (shared by the run-folder tests; a module of its own, not conftest:
``from conftest import`` finds whichever conftest was imported first)."""
import pytest


def refused_by_cli(args, capsys):
    """Run ``pand-train args``; assert it exits 2 with no traceback; return its stderr."""
    from pand.cli import main as cli_main

    with pytest.raises(SystemExit) as e:
        cli_main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err, err
    return err
