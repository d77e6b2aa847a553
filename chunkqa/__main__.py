from chunkqa.cli.app import main

main()
