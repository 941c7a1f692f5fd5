# /main.py on every park-edge board: reads /config.json, counts the boot and starts the role's App.
from common import start

start.main()
