from sentiric_cli.cli import entry

entry()
