from sipr.cli import main

main()
