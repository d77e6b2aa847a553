from chunkqa.cli import main

main()
