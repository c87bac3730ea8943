"""CLI: python -m abmilx.two_stage train --features-dir DIR --splits CSV --fold K --out-dir DIR
--settings JSON --threads N"""

from abmilx.training.cli import train_command
from abmilx.two_stage.train import train


def main(argv: list[str] | None = None) -> None:
    train_command(
        "python -m abmilx.two_stage",
        "train a MIL model on offline features",
        ("--features-dir", "folder of per-slide feature files"),
        train,
        argv,
    )


if __name__ == "__main__":
    main()
