from fedscope.cli.main import main

main()
