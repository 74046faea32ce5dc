from yggdrasil.cli import main

main()
