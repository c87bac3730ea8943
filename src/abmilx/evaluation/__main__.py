"""CLI: python -m abmilx.evaluation {evaluate,aggregate} ... (see --help)."""

from abmilx.evaluation.evaluate import main

if __name__ == "__main__":
    main()
