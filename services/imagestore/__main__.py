from services.imagestore.server import main

main()
