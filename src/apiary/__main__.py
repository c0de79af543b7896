from apiary.cli.main import main

main()
