"""CLI: python -m abmilx.splits make --slides CSV --labels CSV --task T --out CSV --settings JSON."""

from abmilx.splits.files import main

if __name__ == "__main__":
    main()
