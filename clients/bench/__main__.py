"""``python -m clients.bench`` / ``make bench``."""

from clients.bench.run import main

if __name__ == "__main__":
    raise SystemExit(main())
