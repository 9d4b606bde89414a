from sentiric_cli.cli import main

main()
