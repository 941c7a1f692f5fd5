"""Run park-device in-process from the tests (a module, not conftest, so test folders cannot shadow it)."""


def run_cli(capsys, *argv):
    """Run park-device in-process; returns (exit status, stdout, stderr)."""
    from park_device.cli import main
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err
