"""The geartrain job server.

``core/`` is the pure state machine, ``network.py`` the asyncio adapter,
``config.py`` the options, ``app.py`` the process around them.
"""
