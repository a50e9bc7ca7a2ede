from mark1.cli import main

main()
