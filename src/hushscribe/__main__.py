from hushscribe.cli import main

main()
