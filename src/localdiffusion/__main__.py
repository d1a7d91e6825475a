from localdiffusion.cli.app import main

main()
