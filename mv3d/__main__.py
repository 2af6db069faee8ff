from mv3d.cli import main

main()
