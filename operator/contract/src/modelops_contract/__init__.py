"""What every modelops component agrees on, in one stdlib-only package.

- :mod:`.gate`: the accuracy gate (one pure function, used by the operator, local mode and CI);
- :mod:`.artifact`: the model artifact format (files, metadata, checksum, the gate metric);
- :mod:`.params`: the model file (named arrays of numbers; nothing in it can run);
- :mod:`.bundle`: an artifact as compact text (how a trainer Job hands it to the operator);
- :mod:`.urls`: which dataset URLs a trainer may fetch (the admin's rule);
- :mod:`.iris`: the Iris feature names and ranges (trainer, model server, load generator);
- :mod:`.logs`: the one JSON log line format.

The trainer, model server, load generator and operator depend on it; it depends on nothing,
so the operator's image carries no machine-learning stack.
"""
