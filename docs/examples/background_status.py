"""Submit a background job, then poll its status until the server forgets it."""

import time

from geartrain import Client

with Client() as client:  # the blocking client: plain calls, safe to share between threads
    handle = client.submit_background("reverse", b"Hello World!")
    print("submitted", handle)
    while True:
        status = client.status(handle)
        print(f"known={status.known} running={status.running} {status.numerator}/{status.denominator}")
        if not status.known:  # gearmand and geartrain forget a job once it is done
            break
        time.sleep(0.05)
