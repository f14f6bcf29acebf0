from services.nameserver.server import main

main()
