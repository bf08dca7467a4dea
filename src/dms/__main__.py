from dms.cli.main import main

main()
