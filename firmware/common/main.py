# /main.py on every park-edge board: the runtime reads /config.json and starts the role's App.
from common import runtime

runtime.main()
