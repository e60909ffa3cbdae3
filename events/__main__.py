"""``python -m events``: operator commands (schemas, dlq, outbox); see :mod:`events.cli`."""

import logging
import sys

from events.cli import main

# The commands report failures in their own words; the client libraries' retry chatter
# (tracebacks of a refused connection) would only bury them.
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
for noisy in ("aiormq", "aio_pika", "pymongo"):
    logging.getLogger(noisy).setLevel(logging.CRITICAL)

sys.exit(main())
